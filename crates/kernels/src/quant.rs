//! Block-quantized weights as GGUF stores them, and 8-bit activations to multiply them with.
//!
//! Every format packs 32 consecutive weights of a row into one block with an f16 scale:
//!
//! | format | bytes | value of element `j` |
//! |---|---|---|
//! | Q4_0 | 18: `d`, 16 × two nibbles | `d · (n_j − 8)` |
//! | Q4_1 | 20: `d`, `m`, 16 × two nibbles | `d · n_j + m` |
//! | Q8_0 | 34: `d`, 32 × i8 | `d · q_j` |
//!
//! (nibble `j < 16` is the low half of byte `j`, nibble `j ≥ 16` the high half of byte `j − 16`).
//! Activations are quantized per block of 32 to i8 with a scale `d` and the block's scaled sum
//! `s = d · Σ q` ([`ActBlock`]), which is llama.cpp's CPU scheme: the product of a weight block
//! and an activation block is `d_w · d_a · Σ n_j q_j + m · s` for the 4-bit formats (with
//! `m = −8 d_w` for Q4_0) and `d_w · d_a · Σ w_j q_j` for Q8_0.
//!
//! Invariant: the dot product of a weight row and an activation row is computed by the same
//! instructions in the same order however many rows are computed together, so a sequence's
//! results never depend on what else is in its batch.

use half::f16;

/// Weights per block, in every format.
pub const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Format {
    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }
}

/// A row-major matrix of block-quantized weights: `rows` outputs × `cols` inputs.
#[derive(Clone)]
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("a quantized row must be a whole number of {BLOCK}-weight blocks; {0} columns is not")]
    Columns(usize),
    #[error("{format:?} {rows}×{cols} needs {expected} bytes, got {got}")]
    Bytes {
        format: Format,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
}

impl QMatrix {
    /// Wraps GGUF block data (`bytes` = the tensor's data, rows in order).
    pub fn new(
        format: Format,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self, ShapeError> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(ShapeError::Columns(cols));
        }
        let expected = rows * cols / BLOCK * format.block_bytes();
        if bytes.len() != expected {
            return Err(ShapeError::Bytes {
                format,
                rows,
                cols,
                expected,
                got: bytes.len(),
            });
        }
        Ok(Self {
            format,
            rows,
            cols,
            bytes,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weight data.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }

    /// Row `r` expanded to f32 (embedding lookups, reference checks).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "output width");
        let bb = self.format.block_bytes();
        for (b, (block, out)) in self
            .row(r)
            .chunks_exact(bb)
            .zip(out.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let _ = b;
            let d = half_at(block, 0);
            match self.format {
                Format::Q4_0 | Format::Q4_1 => {
                    let (m, qs) = if self.format == Format::Q4_1 {
                        (half_at(block, 2), &block[4..20])
                    } else {
                        (-8.0 * d, &block[2..18])
                    };
                    for j in 0..16 {
                        out[j] = d * f32::from(qs[j] & 0x0F) + m;
                        out[j + 16] = d * f32::from(qs[j] >> 4) + m;
                    }
                }
                Format::Q8_0 => {
                    for j in 0..BLOCK {
                        out[j] = d * f32::from(block[2 + j] as i8);
                    }
                }
            }
        }
    }

    /// `out[i · rows + r] = row r · activation row i` for rows `range` of this matrix and every
    /// activation row (`out` holds `acts.rows() × self.rows()` values).
    pub(crate) fn dot_rows(
        &self,
        range: std::ops::Range<usize>,
        acts: &Activations,
        out: &Out<'_>,
    ) {
        assert_eq!(acts.cols, self.cols, "activation width");
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            #[allow(unsafe_code)]
            // SAFETY: AVX2, FMA and F16C were detected at run time, and AVX-VNNI where `vnni`.
            unsafe {
                x86::dot_rows(vnni(), self, range, acts, out)
            }
            return;
        }
        portable::dot_rows(self, range, acts, out);
    }
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({:?}, {}×{})", self.format, self.rows, self.cols)
    }
}

/// Whether the AVX2 kernels run on this CPU (decided once).
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| {
            std::env::var_os("OPENLEDGER_PORTABLE_KERNELS").is_none()
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the AVX-VNNI kernels run (on top of [`avx2`]); `OPENLEDGER_NO_VNNI=1` turns them off.
fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| {
            avx2()
                && std::env::var_os("OPENLEDGER_NO_VNNI").is_none()
                && std::is_x86_feature_detected!("avxvnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// One block of 32 activations quantized to i8: value `j` ≈ `d · q[j]`; `s = d · Σ q`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub q: [i8; BLOCK],
}

/// Rows of activations quantized for [`QMatrix`] products.
#[derive(Debug, Clone, Default)]
pub struct Activations {
    rows: usize,
    cols: usize,
    blocks: Vec<ActBlock>,
}

impl Activations {
    /// Quantizes `x` (`rows × cols`, row-major), reusing this buffer.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        assert!(
            cols.is_multiple_of(BLOCK),
            "activation width {cols} is not a multiple of {BLOCK}"
        );
        assert!(
            x.len().is_multiple_of(cols),
            "activations are not whole rows"
        );
        self.rows = x.len() / cols;
        self.cols = cols;
        self.blocks.clear();
        self.blocks
            .extend(x.chunks_exact(BLOCK).map(quantize_block));
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn row(&self, i: usize) -> &[ActBlock] {
        let n = self.cols / BLOCK;
        &self.blocks[i * n..(i + 1) * n]
    }
}

/// Quantizes as llama.cpp's `Q8_1` does (its `Q8_0` is the same without `s`): values scaled by
/// `127 / max|x|` and rounded to nearest-even, then the scale and the scaled sum kept in half
/// precision. Mirroring its rounding keeps this runtime's logits close to llama.cpp's.
fn quantize_block(x: &[f32]) -> ActBlock {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        #[allow(unsafe_code)]
        // SAFETY: AVX2 was detected at run time.
        return unsafe { x86::quantize_block(x) };
    }
    portable_quantize_block(x)
}

fn portable_quantize_block(x: &[f32]) -> ActBlock {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; BLOCK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * inv).round_ties_even() as i8;
    }
    finish_block(amax / 127.0, q)
}

fn finish_block(d: f32, q: [i8; BLOCK]) -> ActBlock {
    let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
    ActBlock {
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
        q,
    }
}

/// Where a kernel writes: `rows_out` values per activation row, shared across the tasks of
/// one product, each task writing its own columns.
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    len: usize,
    stride: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

#[allow(unsafe_code)]
// SAFETY: tasks write disjoint elements (their own weight rows) and the pool joins them all
// before the borrow ends.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    pub(crate) fn new(out: &'a mut [f32], stride: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            stride,
            _borrow: std::marker::PhantomData,
        }
    }

    #[inline(always)]
    fn set(&self, act_row: usize, col: usize, value: f32) {
        let at = act_row * self.stride + col;
        assert!(at < self.len && col < self.stride);
        #[allow(unsafe_code)]
        // SAFETY: in bounds (checked above); no two tasks write the same column.
        unsafe {
            *self.ptr.add(at) = value
        };
    }
}

/// Reference kernels in plain Rust, for CPUs without AVX2 and for testing the SIMD ones.
mod portable {
    use super::*;

    pub(super) fn dot_rows(
        w: &QMatrix,
        range: std::ops::Range<usize>,
        acts: &Activations,
        out: &Out<'_>,
    ) {
        let bb = w.format.block_bytes();
        for r in range {
            let row = w.row(r);
            for i in 0..acts.rows() {
                let mut total = 0f32;
                for (block, a) in row.chunks_exact(bb).zip(acts.row(i)) {
                    let d = half_at(block, 0);
                    total += match w.format {
                        Format::Q4_0 | Format::Q4_1 => {
                            let (m, qs) = if w.format == Format::Q4_1 {
                                (half_at(block, 2), &block[4..20])
                            } else {
                                (-8.0 * d, &block[2..18])
                            };
                            let mut dot = 0i32;
                            for j in 0..16 {
                                dot += i32::from(qs[j] & 0x0F) * i32::from(a.q[j]);
                                dot += i32::from(qs[j] >> 4) * i32::from(a.q[j + 16]);
                            }
                            d * a.d * dot as f32 + m * a.s
                        }
                        Format::Q8_0 => {
                            let dot: i32 = (0..BLOCK)
                                .map(|j| i32::from(block[2 + j] as i8) * i32::from(a.q[j]))
                                .sum();
                            d * a.d * dot as f32
                        }
                    };
                }
                out.set(i, r, total);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// The block-dot kernels, compiled once per instruction set: `avx2` (AVX2 + FMA + F16C)
    /// and `vnni` (adds AVX-VNNI's `vpdpbusd`, one instruction for the four-byte dot products
    /// `maddubs` + `madd` take two for).
    macro_rules! dot_kernels {
        ($name:ident, $features:literal, $vnni:literal) => {
            pub(super) mod $name {
                use super::*;

                /// Activation rows processed together: each weight block is unpacked once for all of them.
                const TILE: usize = 4;

                /// `KIND`: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 (a const parameter so each format gets its own
                /// straight-line loop).
                #[target_feature(enable = $features)]
                pub(super) unsafe fn dot_rows<const KIND: u8>(
                    w: &QMatrix,
                    range: std::ops::Range<usize>,
                    acts: &Activations,
                    out: &Out<'_>,
                ) {
                    let n = acts.rows();
                    let mut i = 0;
                    while i < n {
                        let take = (n - i).min(TILE);
                        // Several weight rows at once give the CPU independent accumulator chains (a
                        // single row's chain is latency-bound); fewer when many activation rows already do.
                        let step = if take == 1 { 4 } else { 2 };
                        let mut r = range.start;
                        while r < range.end {
                            let wide = range.end - r >= step;
                            // SAFETY: same target features as this function.
                            unsafe {
                                match (take, wide, step) {
                                    (1, true, _) => tile::<KIND, 4, 1>(w, acts, i, r, out),
                                    (1, false, _) => tile::<KIND, 1, 1>(w, acts, i, r, out),
                                    (2, true, _) => tile::<KIND, 2, 2>(w, acts, i, r, out),
                                    (2, false, _) => tile::<KIND, 1, 2>(w, acts, i, r, out),
                                    (3, true, _) => tile::<KIND, 2, 3>(w, acts, i, r, out),
                                    (3, false, _) => tile::<KIND, 1, 3>(w, acts, i, r, out),
                                    (_, true, _) => tile::<KIND, 2, 4>(w, acts, i, r, out),
                                    (_, false, _) => tile::<KIND, 1, 4>(w, acts, i, r, out),
                                }
                            }
                            r += if wide { step } else { 1 };
                        }
                        i += take;
                    }
                }

                /// Weight rows `r..r + WR` against activation rows `first..first + R`. Each (weight row,
                /// activation row) pair has its own accumulators, updated block by block in the same
                /// order whatever `WR` and `R` are.
                #[target_feature(enable = $features)]
                #[inline]
                unsafe fn tile<const KIND: u8, const WR: usize, const R: usize>(
                    w: &QMatrix,
                    acts: &Activations,
                    first: usize,
                    r: usize,
                    out: &Out<'_>,
                ) {
                    let blocks = acts.cols / BLOCK;
                    // Plain loops rather than `array::from_fn`, which is not inlined into this
                    // target-feature function and cost a call per tile.
                    let per_row = acts.cols / BLOCK;
                    let mut a = [std::ptr::null::<ActBlock>(); R];
                    for k in 0..R {
                        a[k] = acts.blocks[(first + k) * per_row..].as_ptr();
                    }
                    let row_bytes = w.row_bytes();
                    let mut rows = [std::ptr::null::<u8>(); WR];
                    for j in 0..WR {
                        rows[j] = w.bytes[(r + j) * row_bytes..].as_ptr();
                    }
                    let mut acc = [[_mm256_setzero_ps(); R]; WR];
                    // Lane 1 accumulates the Q4 formats' `m · s` offsets (lane 0 is unused).
                    let mut offset = [[_mm_setzero_ps(); R]; WR];
                    let low = _mm_set1_epi8(0x0F);
                    let ones = _mm256_set1_epi16(1);
                    let bb = match KIND {
                        0 => 18,
                        1 => 20,
                        _ => 34,
                    };
                    for b in 0..blocks {
                        let mut unpacked = [_mm256_setzero_si256(); WR];
                        // Each weight block's (d, m) as lanes 0 and 1, converted together: Q4_1
                        // stores m right after d.
                        let mut dm = [_mm_setzero_ps(); WR];
                        for j in 0..WR {
                            // SAFETY (all reads here): each row holds `blocks` blocks of `bb` bytes.
                            let p = unsafe { rows[j].add(b * bb) };
                            unpacked[j] = match KIND {
                                0 | 1 => {
                                    let qs = if KIND == 1 {
                                        dm[j] = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
                                            p.cast::<i32>().read_unaligned()
                                        }));
                                        unsafe { p.add(4) }
                                    } else {
                                        let d = f16_at(unsafe { p.cast::<u16>().read_unaligned() });
                                        dm[j] = _mm_setr_ps(d, -8.0 * d, 0.0, 0.0);
                                        unsafe { p.add(2) }
                                    };
                                    let raw = unsafe { _mm_loadu_si128(qs.cast()) };
                                    let lo = _mm_and_si128(raw, low);
                                    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
                                    _mm256_set_m128i(hi, lo)
                                }
                                _ => {
                                    let d = f16_at(unsafe { p.cast::<u16>().read_unaligned() });
                                    dm[j] = _mm_set_ss(d);
                                    unsafe { _mm256_loadu_si256(p.add(2).cast()) }
                                }
                            };
                        }
                        for k in 0..R {
                            // SAFETY: row `first + k` holds `blocks` activation blocks.
                            let ab = unsafe { &*a[k].add(b) };
                            let q = unsafe { _mm256_loadu_si256(ab.q.as_ptr().cast()) };
                            let ds = _mm_setr_ps(ab.d, ab.s, 0.0, 0.0);
                            for j in 0..WR {
                                // Unsigned × signed bytes: Q8_0's signed weights as magnitude × moved sign.
                                let (u, v) = if KIND == 2 {
                                    let magnitude = _mm256_sign_epi8(unpacked[j], unpacked[j]);
                                    (magnitude, _mm256_sign_epi8(q, unpacked[j]))
                                } else {
                                    (unpacked[j], q)
                                };
                                // Each i32 lane sums bytes 4k..4k+4 either way, and no step saturates
                                // (|u·v| ≤ 128·127), so both give the same integers.
                                let ints = if $vnni {
                                    // SAFETY: reached only in the `vnni` build, where AVX-VNNI
                                    // is enabled and was detected.
                                    #[allow(unused_unsafe)]
                                    unsafe {
                                        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, v)
                                    }
                                } else {
                                    _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), ones)
                                };
                                let sums = _mm256_cvtepi32_ps(ints);
                                // (d · a.d, m · a.s): the block's scale and offset at once.
                                let scaled = _mm_mul_ps(dm[j], ds);
                                acc[j][k] =
                                    _mm256_fmadd_ps(sums, _mm256_broadcastss_ps(scaled), acc[j][k]);
                                if KIND != 2 {
                                    offset[j][k] = _mm_add_ps(offset[j][k], scaled);
                                }
                            }
                        }
                    }
                    for j in 0..WR {
                        for k in 0..R {
                            let o = offset[j][k];
                            let m_s = _mm_cvtss_f32(_mm_shuffle_ps::<1>(o, o));
                            out.set(first + k, r + j, hsum(acc[j][k]) + m_s);
                        }
                    }
                }
            }
        };
    }

    dot_kernels!(avx2, "avx2,fma,f16c", false);
    dot_kernels!(vnni, "avx2,fma,f16c,avxvnni", true);

    /// The kernel for `w`'s format, from the VNNI build where `vnni`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be present, and AVX-VNNI where `vnni`.
    pub(super) unsafe fn dot_rows(
        vnni: bool,
        w: &QMatrix,
        range: std::ops::Range<usize>,
        acts: &Activations,
        out: &Out<'_>,
    ) {
        // SAFETY: the caller vouches for the features.
        unsafe {
            match (vnni, w.format) {
                (false, Format::Q4_0) => avx2::dot_rows::<0>(w, range, acts, out),
                (false, Format::Q4_1) => avx2::dot_rows::<1>(w, range, acts, out),
                (false, Format::Q8_0) => avx2::dot_rows::<2>(w, range, acts, out),
                (true, Format::Q4_0) => vnni::dot_rows::<0>(w, range, acts, out),
                (true, Format::Q4_1) => vnni::dot_rows::<1>(w, range, acts, out),
                (true, Format::Q8_0) => vnni::dot_rows::<2>(w, range, acts, out),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(x: &[f32]) -> ActBlock {
        assert_eq!(x.len(), BLOCK);
        let sign = _mm256_set1_ps(-0.0);
        // SAFETY: x holds 32 floats.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
        let mut max = _mm256_andnot_ps(sign, v[0]);
        for part in &v[1..] {
            max = _mm256_max_ps(max, _mm256_andnot_ps(sign, *part));
        }
        let half = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps(max, 1));
        let quarter = _mm_max_ps(half, _mm_movehl_ps(half, half));
        let amax = _mm_cvtss_f32(_mm_max_ss(quarter, _mm_movehdup_ps(quarter)));
        let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let mut ints = [0i32; BLOCK];
        for (i, part) in v.iter().enumerate() {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(*part, inv),
            );
            // SAFETY: 8 lanes into ints[8i..8i + 8].
            unsafe {
                _mm256_storeu_si256(ints.as_mut_ptr().add(8 * i).cast(), _mm256_cvtps_epi32(r))
            };
        }
        super::finish_block(amax / 127.0, ints.map(|v| v as i8))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn f16_at(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
        _mm_cvtss_f32(one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pool, matmul};
    use proptest::prelude::*;

    /// A random matrix in `format`: blocks from `seed`, scales small and finite.
    fn random_matrix(format: Format, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bb = format.block_bytes();
        let mut bytes = Vec::with_capacity(rows * cols / BLOCK * bb);
        for _ in 0..rows * cols / BLOCK {
            let scale = f16::from_f32((next() % 1000) as f32 / 20_000.0 + 1e-4).to_bits();
            bytes.extend_from_slice(&scale.to_le_bytes());
            if format == Format::Q4_1 {
                let min = f16::from_f32(-((next() % 1000) as f32) / 10_000.0).to_bits();
                bytes.extend_from_slice(&min.to_le_bytes());
            }
            let payload = bb - bytes.len() % bb;
            bytes.extend((0..payload).map(|_| next() as u8));
        }
        QMatrix::new(format, rows, cols, bytes).unwrap()
    }

    fn activations(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Activations) {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                (((i as u64)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(97))
                    % 2001) as f32
                    - 1000.0)
                    / 250.0
            })
            .collect();
        let mut a = Activations::default();
        a.quantize(&x, cols);
        (x, a)
    }

    fn run(w: &QMatrix, a: &Activations, portable_only: bool) -> Vec<f32> {
        let mut out = vec![0f32; a.rows() * w.rows()];
        if portable_only {
            let sink = Out::new(&mut out, w.rows());
            portable::dot_rows(w, 0..w.rows(), a, &sink);
        } else {
            matmul(w, a, &mut out, &Pool::new(2));
        }
        out
    }

    const FORMATS: [Format; 3] = [Format::Q4_0, Format::Q4_1, Format::Q8_0];

    #[test]
    fn products_match_the_dequantized_weights_times_the_dequantized_activations() {
        for format in FORMATS {
            let w = random_matrix(format, 37, 96, 1);
            let (_, a) = activations(5, 96, 2);
            let got = run(&w, &a, false);
            let mut row = vec![0f32; 96];
            for r in 0..37 {
                w.dequantize_row(r, &mut row);
                for i in 0..5 {
                    let terms: Vec<f64> = a
                        .row(i)
                        .iter()
                        .flat_map(|b| b.q.iter().map(move |&q| f64::from(b.d) * f64::from(q)))
                        .zip(&row)
                        .map(|(x, w)| x * f64::from(*w))
                        .collect();
                    let expected: f64 = terms.iter().sum();
                    let scale: f64 = terms.iter().map(|t| t.abs()).sum();
                    // The blocks' sums `s` are kept in half precision, as llama.cpp keeps them.
                    let g = f64::from(got[i * 37 + r]);
                    assert!(
                        (g - expected).abs() <= 1e-5 + 2e-3 * scale,
                        "{format:?} row {r} act {i}: {g} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_simd_kernels_agree_with_the_portable_ones() {
        for format in FORMATS {
            let w = random_matrix(format, 64, 576, 3);
            let (_, a) = activations(7, 576, 4);
            let simd = run(&w, &a, false);
            let plain = run(&w, &a, true);
            for (s, p) in simd.iter().zip(&plain) {
                assert!(
                    (s - p).abs() <= 1e-4 * (1.0 + p.abs()),
                    "{format:?}: {s} vs {p}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn the_vnni_kernels_give_the_avx2_kernels_bits() {
        if !(avx2() && std::is_x86_feature_detected!("avxvnni")) {
            eprintln!("no AVX-VNNI on this CPU: nothing to compare");
            return;
        }
        for format in FORMATS {
            let w = random_matrix(format, 37, 576, 5);
            for rows in [1, 2, 3, 4, 9] {
                let (_, a) = activations(rows, 576, 6);
                let mut with = [vec![0f32; rows * 37], vec![0f32; rows * 37]];
                for (vnni, out) in with.iter_mut().enumerate() {
                    let sink = Out::new(out, 37);
                    // SAFETY: AVX2, FMA, F16C and AVX-VNNI were detected above.
                    unsafe { x86::dot_rows(vnni == 1, &w, 0..37, &a, &sink) }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&with[0]), bits(&with[1]), "{format:?}, {rows} rows");
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_or_in_any_batch_and_any_thread_count() {
        for format in FORMATS {
            let w = random_matrix(format, 50, 128, 5);
            let (x, batch) = activations(9, 128, 6);
            let together = run(&w, &batch, false);
            for i in 0..9 {
                let mut alone = Activations::default();
                alone.quantize(&x[i * 128..(i + 1) * 128], 128);
                for threads in [1, 3] {
                    let mut out = vec![0f32; 50];
                    matmul(&w, &alone, &mut out, &Pool::new(threads));
                    assert_eq!(
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        together[i * 50..(i + 1) * 50]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect::<Vec<_>>(),
                        "{format:?} activation row {i}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_and_portable_quantization_give_the_same_blocks() {
        let (x, _) = activations(16, 64, 9);
        let ties: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        for block in x.chunks_exact(BLOCK).chain([ties.as_slice(), &[0.0; 32]]) {
            let (a, b) = (quantize_block(block), portable_quantize_block(block));
            assert_eq!(
                (a.q, a.d.to_bits(), a.s.to_bits()),
                (b.q, b.d.to_bits(), b.s.to_bits())
            );
        }
    }

    #[test]
    fn bad_shapes_are_refused_with_the_numbers() {
        let e = QMatrix::new(Format::Q4_1, 2, 33, vec![0; 40]).unwrap_err();
        assert!(e.to_string().contains("33 columns"), "{e}");
        let e = QMatrix::new(Format::Q4_1, 2, 32, vec![0; 39]).unwrap_err();
        assert!(e.to_string().contains("needs 40 bytes, got 39"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_block_bytes_never_panic_and_simd_matches_portable(
            seed in any::<u64>(),
            format in 0usize..3,
            rows in 1usize..20,
            blocks in 1usize..5,
            acts in 1usize..6,
        ) {
            let format = FORMATS[format];
            let cols = blocks * BLOCK;
            // Raw random bytes, scales included: NaN and infinite scales are allowed through
            // and must only give NaN or infinite outputs, never a crash.
            let mut state = seed | 1;
            let bytes: Vec<u8> = (0..rows * blocks * format.block_bytes())
                .map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 })
                .collect();
            let w = QMatrix::new(format, rows, cols, bytes).unwrap();
            let (_, a) = activations(acts, cols, seed);
            let simd = run(&w, &a, false);
            let plain = run(&w, &a, true);
            for (s, p) in simd.iter().zip(&plain) {
                // Huge scales may overflow in one summation order and not the other.
                if p.is_finite() && s.is_finite() && p.abs() < 1e30 {
                    prop_assert!((s - p).abs() <= 1e-3 * (1.0 + p.abs()), "{s} vs {p}");
                }
            }
        }
    }
}
