//! Why a JSON-RPC call failed: the node could not be reached, it refused the request, or it
//! answered with something that is not a valid reply.

use std::time::Duration;

use alloy_primitives::B256;
use serde_json::Value;

/// A JSON-RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid RPC URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },

    /// The request never got an HTTP answer: connection refused, DNS, timeout, reset.
    #[error("cannot reach node at {url}: {error} — is `openledger up` running?")]
    Transport {
        url: String,
        error: Box<ureq::Error>,
    },

    /// The node answered with a JSON-RPC error object.
    #[error(
        "node at {url} rejected {method}: {message} (JSON-RPC error {code}{})",
        data.as_ref().map(|d| format!(", data: {d}")).unwrap_or_default()
    )]
    JsonRpc {
        url: String,
        method: String,
        code: i64,
        message: String,
        data: Option<Box<Value>>,
    },

    /// The node answered, but not with a well-formed JSON-RPC reply of the expected shape.
    #[error("unexpected answer from node at {url} to {method}: {reason}")]
    BadResponse {
        url: String,
        method: String,
        reason: String,
    },

    #[error(
        "transaction {hash} has no receipt after {:.1}s; it may still be pending — look it up \
         again later, or resend with the same nonce and a higher fee",
        waited.as_secs_f64()
    )]
    ReceiptTimeout { hash: B256, waited: Duration },
}

impl RpcError {
    /// The JSON-RPC error code, when the node answered with an error object.
    pub fn json_rpc_code(&self) -> Option<i64> {
        match self {
            Self::JsonRpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The revert data of a call or estimate that reverted (JSON-RPC error 3, `data` hex).
    pub fn revert_data(&self) -> Option<Vec<u8>> {
        let Self::JsonRpc { data, .. } = self else {
            return None;
        };
        let text = data.as_deref()?.as_str()?;
        alloy_primitives::hex::decode(text).ok()
    }
}
