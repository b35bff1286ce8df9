//! A small blocking JSON-RPC 2.0 client over plain HTTP, for a node on loopback or a LAN.
//!
//! [`RpcClient`] is cheap to clone and can be shared by many threads: clones share one
//! connection pool.

mod error;
#[cfg(test)]
pub(crate) mod mock;
mod quantity;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256, hex};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use error::RpcError;

/// How long one request may take, connecting included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// First and longest pause between receipt polls in [`RpcClient::wait_receipt`].
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(20);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A JSON-RPC client for one node URL (`http://127.0.0.1:8545`).
#[derive(Clone)]
pub struct RpcClient {
    url: Arc<str>,
    agent: ureq::Agent,
    next_id: Arc<AtomicU64>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client for `url` with [`DEFAULT_REQUEST_TIMEOUT`]. Nothing is sent until the first
    /// call, which is also when a malformed URL is reported.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_timeout(url, DEFAULT_REQUEST_TIMEOUT)
    }

    /// A client whose requests each give up after `timeout`.
    pub fn with_timeout(url: impl Into<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Nodes report JSON-RPC errors with 4xx/5xx statuses too; read those bodies.
            .http_status_as_error(false)
            // Enough pooled connections for a benchmark driving the node from many threads.
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .user_agent(concat!("openledger-wallet/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            url: Arc::from(url.into()),
            agent: config.into(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The node URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params` (a JSON array, usually) and decodes the `result`.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let result = self.call_raw(method, params)?;
        T::deserialize(&result).map_err(|e| {
            self.bad_response(
                method,
                format!("cannot decode result {}: {e}", snippet(&result.to_string())),
            )
        })
    }

    /// The node's chain id (`eth_chainId`).
    pub fn chain_id(&self) -> Result<u64, RpcError> {
        self.quantity("eth_chainId", json!([]))
    }

    /// Balance of `address` in wei at the latest block.
    pub fn balance(&self, address: Address) -> Result<U256, RpcError> {
        self.quantity("eth_getBalance", json!([address, "latest"]))
    }

    /// Next nonce for `address`, counting transactions still in the pool ("pending").
    pub fn nonce(&self, address: Address) -> Result<u64, RpcError> {
        self.quantity("eth_getTransactionCount", json!([address, "pending"]))
    }

    /// Suggested legacy gas price in wei (`eth_gasPrice`).
    pub fn gas_price(&self) -> Result<u128, RpcError> {
        self.quantity("eth_gasPrice", json!([]))
    }

    /// Suggested priority fee (tip) per gas in wei (`eth_maxPriorityFeePerGas`).
    pub fn max_priority_fee(&self) -> Result<u128, RpcError> {
        self.quantity("eth_maxPriorityFeePerGas", json!([]))
    }

    /// Base fee per gas of the latest block, in wei.
    pub fn latest_base_fee(&self) -> Result<u128, RpcError> {
        const METHOD: &str = "eth_getBlockByNumber";
        let block = self.call_raw(METHOD, json!(["latest", false]))?;
        let base_fee = block.get("baseFeePerGas").ok_or_else(|| {
            self.bad_response(METHOD, "the latest block has no baseFeePerGas".into())
        })?;
        quantity::parse_as(base_fee).map_err(|reason| self.bad_response(METHOD, reason))
    }

    /// Submits a signed, EIP-2718-encoded transaction; returns its hash as the node reports it.
    pub fn send_raw(&self, raw: &[u8]) -> Result<B256, RpcError> {
        self.call("eth_sendRawTransaction", json!([hex::encode_prefixed(raw)]))
    }

    /// The receipt of transaction `hash`, or `None` while it is not yet in a block.
    pub fn receipt(&self, hash: B256) -> Result<Option<Value>, RpcError> {
        let receipt = self.call_raw("eth_getTransactionReceipt", json!([hash]))?;
        Ok(Some(receipt).filter(|r| !r.is_null()))
    }

    /// Polls for the receipt of `hash` until it appears or `timeout` passes.
    /// Failures of the node itself end the wait at once.
    pub fn wait_receipt(&self, hash: B256, timeout: Duration) -> Result<Value, RpcError> {
        let start = Instant::now();
        let mut interval = FIRST_POLL_INTERVAL;
        loop {
            if let Some(receipt) = self.receipt(hash)? {
                return Ok(receipt);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(RpcError::ReceiptTimeout { hash, waited });
            }
            std::thread::sleep(interval.min(timeout - waited));
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
        }
    }

    fn quantity<T: TryFrom<U256>>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let result = self.call_raw(method, params)?;
        quantity::parse_as(&result).map_err(|reason| self.bad_response(method, reason))
    }

    /// Sends one request and returns its `result`, which may be JSON `null`.
    fn call_raw(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        check_url(&self.url).map_err(|reason| RpcError::InvalidUrl {
            url: self.url.to_string(),
            reason,
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let transport = |error| RpcError::Transport {
            url: self.url.to_string(),
            error: Box::new(error),
        };
        let mut response = self
            .agent
            .post(&*self.url)
            .send_json(&request)
            .map_err(transport)?;
        let status = response.status();
        let body = response.body_mut().read_to_string().map_err(transport)?;
        self.parse_reply(method, id, status.as_u16(), &body)
    }

    fn parse_reply(
        &self,
        method: &str,
        id: u64,
        status: u16,
        body: &str,
    ) -> Result<Value, RpcError> {
        let bad = |reason: String| self.bad_response(method, reason);
        let reply: Value = serde_json::from_str(body).map_err(|_| {
            bad(format!(
                "HTTP {status} with a body that is not JSON ({}); is {} the node's RPC URL?",
                snippet(body),
                self.url
            ))
        })?;
        let Value::Object(mut reply) = reply else {
            return Err(bad(format!(
                "HTTP {status} with JSON that is not an object: {}",
                snippet(body)
            )));
        };
        if let Some(error) = reply.remove("error").filter(|e| !e.is_null()) {
            let code = error.get("code").and_then(Value::as_i64);
            let message = error.get("message").and_then(Value::as_str);
            let (Some(code), Some(message)) = (code, message) else {
                return Err(bad(format!(
                    "malformed error object {}",
                    snippet(&error.to_string())
                )));
            };
            return Err(RpcError::JsonRpc {
                url: self.url.to_string(),
                method: method.to_owned(),
                code,
                message: message.to_owned(),
                data: error.get("data").cloned().map(Box::new),
            });
        }
        if reply.get("id") != Some(&json!(id)) {
            return Err(bad(format!(
                "reply id {} does not match request id {id}",
                reply
                    .get("id")
                    .map_or("(missing)".to_owned(), Value::to_string)
            )));
        }
        reply.remove("result").ok_or_else(|| {
            bad(format!(
                "HTTP {status} reply has neither result nor error: {}",
                snippet(body)
            ))
        })
    }

    fn bad_response(&self, method: &str, reason: String) -> RpcError {
        RpcError::BadResponse {
            url: self.url.to_string(),
            method: method.to_owned(),
            reason,
        }
    }
}

/// Plain HTTP is all this client speaks (ureq is built without TLS).
fn check_url(url: &str) -> Result<(), &'static str> {
    let has_scheme = |scheme: &str| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    };
    if has_scheme("http://") {
        Ok(())
    } else if has_scheme("https://") {
        Err("https is not supported (this build has no TLS); use the node's http:// URL")
    } else {
        Err("it must start with http://, e.g. http://127.0.0.1:8545")
    }
}

/// The start of `text`, for quoting a bad reply in an error message.
fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
