//! f32 inner loops: `x · y` and `y += a · x`, also over half-precision vectors (the KV cache).
//!
//! Built without `-C target-cpu=native`, the compiler vectorises these to 4-wide SSE at best;
//! the AVX2 versions run 8 wide with fused multiply-adds. Both accumulate in a fixed order
//! that depends only on the length, so a result never depends on the caller's batch.

use half::f16;

/// `Σ x[i] · y[i]`.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot of different lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::dot(x, y) };
    }
    portable_dot(x, y)
}

/// `y[i] += a · x[i]`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy of different lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::axpy(a, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `out[j] += Σ_i x[i] · w[i · out.len() + j]`: a row vector times a row-major matrix, the
/// two halves of a LoRA delta (`x · Aᵀ`, then `t · Bᵀ`).
pub fn xw_add(x: &[f32], w: &[f32], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        x.len() * out.len(),
        "matrix is not x.len() × out.len()"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::xw_add(x, w, out) };
    }
    let cols = out.len();
    for (a, row) in x.iter().zip(w.chunks_exact(cols.max(1))) {
        for (y, v) in out.iter_mut().zip(row) {
            *y += a * v;
        }
    }
}

/// `Σ x[i] · y[i]` over half-precision vectors, summed in f32.
pub fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
    assert_eq!(x.len(), y.len(), "dot of different lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::dot_f16(x, y) };
    }
    let mut lanes = [0f32; 8];
    let chunks = x.len() / 8 * 8;
    for (xc, yc) in x[..chunks].chunks_exact(8).zip(y[..chunks].chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += xc[k].to_f32() * yc[k].to_f32();
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for (a, b) in x[chunks..].iter().zip(&y[chunks..]) {
        total += a.to_f32() * b.to_f32();
    }
    total
}

/// `y[i] += a · x[i]` with `x` in half precision.
pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy of different lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::axpy_f16(a, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x.to_f32();
    }
}

/// `dst[i] = src[i]` rounded to half precision (to nearest even).
pub fn to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "conversion of different lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and F16C were detected at run time.
        return unsafe { x86::to_f16(src, dst) };
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

/// One query head's causal attention over a half-precision cache, as llama.cpp computes it:
/// scores `q · k_j · scale` for the first `visible` positions (`k_j` at
/// `keys[j · stride + offset..][..d]`), softmax summed in f64, weights rounded to half
/// precision, `out = Σ w_j v_j`. `query` is already rounded to half precision; `scores` is
/// scratch space.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    query: &[f16],
    keys: &[f16],
    values: &[f16],
    stride: usize,
    offset: usize,
    visible: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = query.len();
    assert!(
        out.len() == d && visible > 0,
        "one head of output, at least one position"
    );
    assert!(
        (visible - 1) * stride + offset + d <= keys.len().min(values.len()),
        "the cache holds fewer positions than visible"
    );
    scores.clear();
    scores.extend((0..visible).map(|j| dot_f16(query, &keys[j * stride + offset..][..d]) * scale));
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &w| m.max(w));
    let mut sum = 0f64;
    for w in scores.iter_mut() {
        *w = (*w - max).exp();
        sum += f64::from(*w);
    }
    let inv = (1.0 / sum) as f32;
    out.fill(0.0);
    for (j, &w) in scores.iter().enumerate() {
        let w = f16::from_f32(w * inv).to_f32();
        axpy_f16(w, &values[j * stride + offset..][..d], out);
    }
}

/// `x[i] = e^x[i]` for every element, to within a few units in the last place; inputs below
/// −87.3 (where `e^x` leaves f32's normal range) give exactly 0 and inputs above 88.376
/// saturate at ≈ 2.4e38, so `exp(−∞) = 0` as a masked
/// softmax needs. libm's `expf` goes one element at a time; this runs 8 at a time (a training
/// step takes tens of millions of exponentials in softmax, SwiGLU and the loss).
pub fn exp(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::exp(x) };
    }
    for v in x {
        *v = portable_exp(*v);
    }
}

/// The constants of [`exp`]: `e^x = 2^n · e^r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`, and
/// `e^r` a degree-6 polynomial (Cephes' `expf` coefficients).
mod exp_constants {
    pub const LOW: f32 = -87.3;
    /// The largest input whose `n` is 127 (2¹²⁸ has no f32 exponent); larger inputs saturate
    /// at `e^HIGH` ≈ 2.4e38.
    pub const HIGH: f32 = 88.376;
    pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HIGH: f32 = 0.693_359_4;
    pub const LN2_LOW: f32 = -2.121_944_4e-4;
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

fn portable_exp(v: f32) -> f32 {
    use exp_constants::*;
    if v.is_nan() {
        return v;
    }
    if v < LOW {
        return 0.0;
    }
    let x = v.min(HIGH);
    let n = (x * LOG2_E).round();
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

fn portable_dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.len() / 8 * 8;
    for (xc, yc) in x[..chunks].chunks_exact(8).zip(y[..chunks].chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += xc[k] * yc[k];
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for (a, b) in x[chunks..].iter().zip(&y[chunks..]) {
        total += a * b;
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp(x: &mut [f32]) {
        use super::exp_constants::*;
        let n8 = x.len() / 8 * 8;
        if n8 < x.len() {
            // The tail goes through the same vector code, padded, so an element's result never
            // depends on where it sits in the slice.
            let mut tail = [0f32; 8];
            let rest = x.len() - n8;
            tail[..rest].copy_from_slice(&x[n8..]);
            // SAFETY: AVX2 and FMA are enabled here; the tail is 8 long.
            unsafe { exp(&mut tail) };
            x[n8..].copy_from_slice(&tail[..rest]);
        }
        let (low, high) = (_mm256_set1_ps(LOW), _mm256_set1_ps(HIGH));
        let log2e = _mm256_set1_ps(LOG2_E);
        let (ln2_high, ln2_low) = (_mm256_set1_ps(LN2_HIGH), _mm256_set1_ps(LN2_LOW));
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i < n8 {
            // SAFETY: i + 8 <= n8 <= x.len().
            unsafe {
                let ptr = x.as_mut_ptr().add(i);
                let v = _mm256_loadu_ps(ptr);
                let below = _mm256_cmp_ps::<_CMP_LT_OQ>(v, low);
                let clamped = _mm256_min_ps(_mm256_max_ps(v, low), high);
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(clamped, log2e),
                );
                let r = _mm256_fnmadd_ps(n, ln2_high, clamped);
                let r = _mm256_fnmadd_ps(n, ln2_low, r);
                let mut p = _mm256_set1_ps(P[0]);
                for c in &P[1..] {
                    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
                }
                let y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, one));
                let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n),
                    _mm256_set1_epi32(127),
                )));
                let out = _mm256_andnot_ps(below, _mm256_mul_ps(y, scale));
                // NaN compares false to everything: keep it.
                let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
                _mm256_storeu_ps(ptr, _mm256_blendv_ps(out, v, nan));
            }
            i += 8;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(x: &[f16], y: &[f16]) -> f32 {
        let n = x.len() / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both; f16 is two bytes.
            let (a, b) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(y.as_ptr().add(i).cast())),
                )
            };
            acc = _mm256_fmadd_ps(a, b, acc);
            i += 8;
        }
        let mut total = hsum(acc);
        for k in n..x.len() {
            total += x[k].to_f32() * y[k].to_f32();
        }
        total
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both.
            unsafe {
                let yp = y.as_mut_ptr().add(i);
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()));
                _mm256_storeu_ps(yp, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(yp)));
            }
            i += 8;
        }
        for k in n..x.len() {
            y[k] += a * x[k].to_f32();
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn to_f16(src: &[f32], dst: &mut [f16]) {
        let n = src.len() / 8 * 8;
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both.
            unsafe {
                let v = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i),
                ));
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), v);
            }
            i += 8;
        }
        for k in n..src.len() {
            dst[k] = f16::from_f32(src[k]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(acc: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
        let n = x.len() / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                )
            };
            acc = _mm256_fmadd_ps(a, b, acc);
            i += 8;
        }
        let mut total = hsum(acc);
        for k in n..x.len() {
            total += x[k] * y[k];
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn xw_add(x: &[f32], w: &[f32], out: &mut [f32]) {
        let cols = out.len();
        for (i, &a) in x.iter().enumerate() {
            // SAFETY: same features; the row is in bounds (checked by the caller).
            unsafe { axpy(a, &w[i * cols..(i + 1) * cols], out) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n <= len of both.
            unsafe {
                let yp = y.as_mut_ptr().add(i);
                let v =
                    _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp));
                _mm256_storeu_ps(yp, v);
            }
            i += 8;
        }
        for k in n..x.len() {
            y[k] += a * x[k];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_a_few_ulps_of_libm_and_zero_below_range() {
        let mut inputs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.0443).collect();
        inputs.extend([0.0, -0.0, 1e-8, -1e-8, 88.0, -87.0, 0.5, -0.5]);
        let mut fast = inputs.clone();
        exp(&mut fast);
        for (&x, &y) in inputs.iter().zip(&fast) {
            let want = x.exp();
            if x < -87.3 {
                assert_eq!(y, 0.0, "exp({x})");
            } else if x > 88.376 {
                assert!(y > 2e38 && y.is_finite(), "exp({x}) = {y}");
            } else {
                assert!(
                    (y - want).abs() <= 4.0 * f32::EPSILON * want,
                    "exp({x}) = {y}, libm {want}"
                );
            }
        }
        let mut special = [f32::NEG_INFINITY, f32::NAN, -1e30, 1e30];
        exp(&mut special);
        assert_eq!(special[0], 0.0);
        assert!(special[1].is_nan());
        assert_eq!(special[2], 0.0);
        assert!(special[3] > 1e38, "{}", special[3]);
        // The tail (fewer than 8) agrees with the vector body.
        let mut body = [1.25f32; 9];
        exp(&mut body);
        assert_eq!(body[0], body[8]);
    }

    use super::*;

    #[test]
    fn dot_and_axpy_agree_with_plain_loops_at_every_length() {
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 576] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let y: Vec<f32> = (0..len)
                .map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0)
                .collect();
            let plain: f64 = x.iter().zip(&y).map(|(a, b)| f64::from(a * b)).sum();
            assert!(
                (f64::from(dot(&x, &y)) - plain).abs() < 1e-3,
                "dot, length {len}"
            );
            let w: Vec<f32> = (0..len * 3).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut out = vec![1f32; 3];
            xw_add(&x, &w, &mut out);
            for j in 0..3 {
                let plain: f32 = 1.0 + (0..len).map(|i| x[i] * w[i * 3 + j]).sum::<f32>();
                assert!((out[j] - plain).abs() < 1e-3, "xw_add, length {len}");
            }
            let (mut xh, mut yh) = (vec![f16::ZERO; len], vec![f16::ZERO; len]);
            to_f16(&x, &mut xh);
            to_f16(&y, &mut yh);
            assert!(
                xh.iter().zip(&x).all(|(h, f)| *h == f16::from_f32(*f)),
                "to_f16"
            );
            let plain: f32 = xh
                .iter()
                .zip(&yh)
                .map(|(a, b)| a.to_f32() * b.to_f32())
                .sum();
            assert!(
                (dot_f16(&xh, &yh) - plain).abs() < 1e-3,
                "dot_f16, length {len}"
            );
            let mut z = y.clone();
            axpy_f16(0.25, &xh, &mut z);
            for i in 0..len {
                assert!((z[i] - (y[i] + 0.25 * xh[i].to_f32())).abs() < 1e-5);
            }
            let mut z = y.clone();
            axpy(0.5, &x, &mut z);
            for i in 0..len {
                assert!((z[i] - (y[i] + 0.5 * x[i])).abs() < 1e-6);
            }
        }
    }
}
