//! JSON-RPC errors with the codes and texts Ethereum clients expect (geth's).

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use openledger_primitives::Bytes;

/// geth's catch-all server error code, used for rejected transactions and missing state.
pub const SERVER_ERROR: i32 = -32000;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;
/// `execution reverted`, with the revert data in `data` (EIP-1474 / geth).
pub const EXECUTION_REVERTED: i32 = 3;
/// Result set too large (geth's log limit).
pub const LIMIT_EXCEEDED: i32 = -32005;

pub fn server(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObject::owned(SERVER_ERROR, message.into(), None::<()>)
}

pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObject::owned(INVALID_PARAMS, message.into(), None::<()>)
}

pub fn internal(message: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObject::owned(
        INTERNAL_ERROR,
        format!("internal error: {message}"),
        None::<()>,
    )
}

pub fn header_not_found() -> ErrorObjectOwned {
    server("header not found")
}

/// `execution reverted: <reason>` with the raw revert payload as data.
pub fn reverted(output: &Bytes) -> ErrorObjectOwned {
    let message = match revert_reason(output) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    ErrorObject::owned(EXECUTION_REVERTED, message, Some(output.to_string()))
}

/// The human-readable reason of an `Error(string)` or `Panic(uint256)` revert.
pub fn revert_reason(output: &[u8]) -> Option<String> {
    use alloy_sol_types::SolError;
    if let Ok(r) = alloy_sol_types::Revert::abi_decode(output) {
        return Some(r.reason);
    }
    if let Ok(p) = alloy_sol_types::Panic::abi_decode(output) {
        return Some(format!(
            "panic: {}",
            p.kind()
                .map(|k| k.to_string())
                .unwrap_or_else(|| p.code.to_string())
        ));
    }
    None
}
