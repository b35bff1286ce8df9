//! The Ethereum JSON-RPC edge of the node: HTTP and WebSocket on one port.
//!
//! This is the only place that knows about JSON-RPC. Methods decode their parameters with
//! alloy's RPC types, call typed services ([`Chain`], the store) and map domain errors to geth's
//! codes in [`error`]. Request size, batch length and connection count are bounded here so a
//! hostile client cannot exhaust the node.

pub mod error;
mod eth;
mod filters;
mod types;

use crate::chain::Chain;
use jsonrpsee::RpcModule;
use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Limits of the RPC server.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub addr: SocketAddr,
    pub max_request_bytes: u32,
    pub max_response_bytes: u32,
    pub max_batch_len: u32,
    pub max_connections: u32,
    /// `eth_sendRawTransaction` waits up to this long for inclusion when blocks are instant,
    /// so a client's first receipt query finds the receipt (as with anvil's automine).
    pub wait_for_inclusion: Option<Duration>,
    /// Most logs one `eth_getLogs` may return.
    pub max_logs: usize,
    /// Most blocks one `eth_getLogs` may scan.
    pub max_log_range: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8545)),
            max_request_bytes: 5 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            max_batch_len: 1_000,
            max_connections: 500,
            wait_for_inclusion: Some(Duration::from_secs(10)),
            max_logs: 10_000,
            max_log_range: 100_000,
        }
    }
}

/// What every method handler sees.
pub struct RpcContext {
    pub(crate) chain: Arc<Chain>,
    pub(crate) config: RpcConfig,
    pub(crate) filters: filters::Filters,
}

/// Starts the server; it runs until the handle is stopped.
pub async fn serve(
    chain: Arc<Chain>,
    config: RpcConfig,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch_len))
        .set_id_provider(HexIdProvider::default())
        .build();
    let cors = tower_http::cors::CorsLayer::permissive();
    let server = Server::builder()
        .set_config(server_config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(cors))
        .build(config.addr)
        .await?;
    let addr = server.local_addr()?;
    Ok((addr, server.start(module(chain, config))))
}

/// Subscription ids as Ethereum clients expect them: "0x" and 32 hex digits (viem and ethers
/// match notifications by string id).
#[derive(Debug)]
struct HexIdProvider {
    seed: [u8; 16],
    counter: std::sync::atomic::AtomicU64,
}

impl Default for HexIdProvider {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&openledger_primitives::keccak256(nanos.to_le_bytes())[..16]);
        Self {
            seed,
            counter: Default::default(),
        }
    }
}

impl jsonrpsee::core::traits::IdProvider for HexIdProvider {
    fn next_id(&self) -> jsonrpsee::types::SubscriptionId<'static> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let digest = openledger_primitives::keccak256([&self.seed[..], &n.to_le_bytes()].concat());
        jsonrpsee::types::SubscriptionId::Str(
            format!("0x{}", alloy_primitives::hex::encode(&digest[..16])).into(),
        )
    }
}

/// Every method, without a server: `serve` mounts it, tests call it in-process.
pub fn module(chain: Arc<Chain>, config: RpcConfig) -> RpcModule<RpcContext> {
    let mut module = RpcModule::new(RpcContext {
        chain,
        config,
        filters: Default::default(),
    });
    eth::register(&mut module).expect("method names are unique");
    module
}
