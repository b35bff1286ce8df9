//! OPEN amounts as people write them ("1.5") and as the chain stores them (wei, 18 decimals).

use alloy_primitives::U256;

/// Decimal places of OPEN: 1 OPEN = 10^18 wei, like ether.
pub const DECIMALS: usize = 18;

/// One OPEN in wei.
pub const ONE_OPEN: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

/// One gwei (10^9 wei); base fees are quoted in it.
pub const GWEI: u128 = 1_000_000_000;

/// Why a string is not an OPEN amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    #[error("no amount given; write an OPEN amount such as 1.5")]
    Empty,
    #[error("amount {input:?} is negative; only amounts of zero or more can be sent")]
    Negative { input: String },
    #[error(
        "amount {input:?} has {decimals} decimal places, but OPEN has only 18 \
         (the smallest amount is 0.000000000000000001)"
    )]
    TooManyDecimals { input: String, decimals: usize },
    #[error(
        "amount {input:?} is not a decimal number; write digits with at most one '.', \
         e.g. 1.5 or 0.001 (no signs, exponents, separators or unit names)"
    )]
    NotANumber { input: String },
    #[error("amount {input:?} is too large: it does not fit in 256 bits of wei")]
    TooLarge { input: String },
}

/// Parses a decimal OPEN amount ("1.5", "10000", ".25") into wei.
///
/// Surrounding whitespace is ignored. At most 18 decimal places are accepted, so parsing
/// never rounds.
pub fn parse_open(input: &str) -> Result<U256, UnitsError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UnitsError::Empty);
    }
    if s.starts_with('-') {
        return Err(UnitsError::Negative {
            input: input.to_owned(),
        });
    }
    let not_a_number = || UnitsError::NotANumber {
        input: input.to_owned(),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return Err(not_a_number());
    }
    if fraction.len() > DECIMALS {
        return Err(UnitsError::TooManyDecimals {
            input: input.to_owned(),
            decimals: fraction.len(),
        });
    }
    let too_large = || UnitsError::TooLarge {
        input: input.to_owned(),
    };
    let whole = if whole.is_empty() {
        U256::ZERO
    } else {
        U256::from_str_radix(whole, 10).map_err(|_| too_large())?
    };
    let fraction = if fraction.is_empty() {
        U256::ZERO
    } else {
        let padded = format!("{fraction:0<DECIMALS$}");
        U256::from_str_radix(&padded, 10).map_err(|_| not_a_number())?
    };
    whole
        .checked_mul(ONE_OPEN)
        .and_then(|wei| wei.checked_add(fraction))
        .ok_or_else(too_large)
}

/// Formats wei as a decimal OPEN amount without trailing zeros: "1.5", "10000",
/// "0.000000000000000001".
pub fn format_open(wei: U256) -> String {
    let (whole, fraction) = wei.div_rem(ONE_OPEN);
    if fraction.is_zero() {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0>DECIMALS$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wei(n: u128) -> U256 {
        U256::from(n)
    }

    #[test]
    fn parses_whole_fractional_and_tiny_amounts() {
        assert_eq!(parse_open("1").unwrap(), ONE_OPEN);
        assert_eq!(parse_open("1.5").unwrap(), wei(1_500_000_000_000_000_000));
        assert_eq!(parse_open("10000").unwrap(), wei(10_000) * ONE_OPEN);
        assert_eq!(parse_open("0.000000000000000001").unwrap(), wei(1));
        assert_eq!(parse_open(".25").unwrap(), wei(250_000_000_000_000_000));
        assert_eq!(parse_open("2.").unwrap(), wei(2) * ONE_OPEN);
        assert_eq!(parse_open("  3 ").unwrap(), wei(3) * ONE_OPEN);
        assert_eq!(parse_open("0").unwrap(), U256::ZERO);
    }

    #[test]
    fn formats_without_trailing_zeros() {
        assert_eq!(format_open(wei(1_500_000_000_000_000_000)), "1.5");
        assert_eq!(format_open(wei(10_000) * ONE_OPEN), "10000");
        assert_eq!(format_open(wei(1)), "0.000000000000000001");
        assert_eq!(format_open(U256::ZERO), "0");
    }

    #[test]
    fn rejects_more_than_18_decimals() {
        let err = parse_open("1.0000000000000000001").unwrap_err();
        assert_eq!(
            err,
            UnitsError::TooManyDecimals {
                input: "1.0000000000000000001".into(),
                decimals: 19
            }
        );
        assert!(err.to_string().contains("only 18"), "{err}");
    }

    #[test]
    fn rejects_negative_amounts() {
        assert!(matches!(parse_open("-1"), Err(UnitsError::Negative { .. })));
        assert!(matches!(
            parse_open(" -0.5"),
            Err(UnitsError::Negative { .. })
        ));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in [
            ".", "1.2.3", "1e18", "+1", "1,5", "1_000", "abc", "1 OPEN", "0x10", "١",
        ] {
            let err = parse_open(bad).unwrap_err();
            assert!(
                matches!(err, UnitsError::NotANumber { .. }),
                "{bad:?} gave {err:?}"
            );
            assert!(err.to_string().contains("e.g. 1.5"), "{err}");
        }
        assert_eq!(parse_open("   "), Err(UnitsError::Empty));
    }

    #[test]
    fn rejects_amounts_beyond_256_bits() {
        let max_whole = (U256::MAX / ONE_OPEN).to_string();
        assert!(parse_open(&max_whole).is_ok());
        let too_big = (U256::MAX / ONE_OPEN + U256::from(1)).to_string();
        assert!(matches!(
            parse_open(&too_big),
            Err(UnitsError::TooLarge { .. })
        ));
        let huge = "9".repeat(100);
        assert!(matches!(
            parse_open(&huge),
            Err(UnitsError::TooLarge { .. })
        ));
    }

    #[test]
    fn largest_amount_roundtrips() {
        assert_eq!(parse_open(&format_open(U256::MAX)).unwrap(), U256::MAX);
    }

    proptest! {
        #[test]
        fn format_then_parse_roundtrips(limbs in any::<[u64; 4]>()) {
            let amount = U256::from_limbs(limbs);
            prop_assert_eq!(parse_open(&format_open(amount)).unwrap(), amount);
        }

        #[test]
        fn small_amounts_format_then_parse_roundtrip(n in any::<u128>()) {
            let amount = U256::from(n);
            prop_assert_eq!(parse_open(&format_open(amount)).unwrap(), amount);
        }
    }
}
