//! JSON-RPC "quantities": unsigned integers written as 0x-prefixed hex strings.

use alloy_primitives::U256;
use serde_json::Value;

/// Reads a quantity. Leading zeros are tolerated; plain JSON numbers are accepted too, as
/// some nodes send them for small values.
pub(crate) fn parse(value: &Value) -> Result<U256, String> {
    match value {
        Value::String(s) => {
            let digits = s
                .strip_prefix("0x")
                .or_else(|| s.strip_prefix("0X"))
                .ok_or_else(|| format!("{s:?} is not a 0x-prefixed hex quantity"))?;
            if digits.is_empty() {
                return Err(format!("{s:?} has no digits"));
            }
            U256::from_str_radix(digits, 16)
                .map_err(|e| format!("{s:?} is not a hex quantity: {e}"))
        }
        Value::Number(n) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| format!("{n} is not an unsigned integer")),
        other => Err(format!("expected a hex quantity, got {other}")),
    }
}

/// Reads a quantity that must fit in `T` (u64 for nonces and chain ids, u128 for fees).
pub(crate) fn parse_as<T: TryFrom<U256>>(value: &Value) -> Result<T, String> {
    let n = parse(value)?;
    T::try_from(n).map_err(|_| format!("{n} is too large ({value})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_hex_quantities_and_small_numbers() {
        assert_eq!(parse(&json!("0x0")).unwrap(), U256::ZERO);
        assert_eq!(parse(&json!("0x64c")).unwrap(), U256::from(1612));
        assert_eq!(parse(&json!("0x0001")).unwrap(), U256::from(1));
        assert_eq!(parse(&json!(7)).unwrap(), U256::from(7));
        let max = format!("0x{}", "f".repeat(64));
        assert_eq!(parse(&json!(max)).unwrap(), U256::MAX);
    }

    #[test]
    fn rejects_non_quantities() {
        for bad in [
            json!("12"),
            json!("0x"),
            json!("0xzz"),
            json!(-1),
            json!(null),
            json!([1]),
        ] {
            assert!(parse(&bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn narrowing_reports_overflow() {
        assert_eq!(
            parse_as::<u64>(&json!("0xffffffffffffffff")).unwrap(),
            u64::MAX
        );
        let err = parse_as::<u64>(&json!("0x10000000000000000")).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }
}
