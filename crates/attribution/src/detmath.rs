//! A natural logarithm built from IEEE-754 basic operations only.
//!
//! `f64::ln` calls the platform's libm, whose last bit differs between C libraries and
//! architectures. Attribution shares are recomputed by verifiers on other machines, so every
//! float the scoring uses comes from `+ − × ÷` (correctly rounded everywhere) in a fixed order.

const LN_2: f64 = std::f64::consts::LN_2;
const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// `ln(x)` for finite `x > 0`, within a few ulps of the exact value, bit-identical on every
/// IEEE-754 platform. Returns NaN for `x ≤ 0` or non-finite `x`.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return f64::NAN;
    }
    let mut x = x;
    let mut e: i64 = 0;
    if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first (exact).
        x *= (1u64 << 54) as f64;
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // [1, 2)
    if m > SQRT_2 {
        m /= 2.0; // exact
        e += 1;
    }
    // ln(m) = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.1716: 14 odd terms reach 1e-22.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..14 {
        sum += term / (2 * k + 1) as f64;
        term *= s2;
    }
    2.0 * sum + e as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn ln_of_simple_values() {
        assert_eq!(super::ln(1.0), 0.0);
        assert!((super::ln(2.0) - std::f64::consts::LN_2).abs() < 1e-16);
        assert!((super::ln(std::f64::consts::E) - 1.0).abs() < 1e-15);
        assert!(super::ln(0.0).is_nan());
        assert!(super::ln(-1.0).is_nan());
        assert!((super::ln(5e-324) - 5e-324f64.ln()).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn ln_matches_libm_closely(x in 1e-300f64..1e300) {
            let ours = super::ln(x);
            let std = x.ln();
            prop_assert!((ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0), "{x}: {ours} vs {std}");
        }
    }
}
