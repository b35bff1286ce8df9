//! The OpenLedger node: storage, state commitment, pool, consensus and JSON-RPC, wired together.
//!
//! [`Node::start`] is the one place where the parts are assembled; `openledger up` and the
//! integration tests both go through it, so what the tests run is what users run.

pub mod chain;
pub mod commitment;
pub mod consensus;
pub mod pool;
pub mod rpc;
pub mod store;

use chain::Chain;
use consensus::{Consensus, Mining, Solo};
use openledger_chain::{ChainSpec, Genesis};
use openledger_primitives::Address;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

pub use commitment::{ProofError, StateProof};

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub datadir: PathBuf,
    pub spec: ChainSpec,
    pub genesis: Genesis,
    pub mining: Mining,
    /// Receives priority tips of the blocks this node seals.
    pub beneficiary: Address,
    pub rpc: rpc::RpcConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data directory {path}: {source}")]
    Datadir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    #[error(
        "cannot serve JSON-RPC on {addr}: {source} (is another node using the port? pick one with --port)"
    )]
    Rpc {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    pub chain: Arc<Chain>,
    pub rpc_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    rpc: jsonrpsee::server::ServerHandle,
    consensus: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Opens the chain under `config.datadir` (recovering the last committed block), starts the
    /// consensus driver and the RPC server.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.datadir).map_err(|source| NodeError::Datadir {
            path: config.datadir.display().to_string(),
            source,
        })?;
        let chain = {
            let NodeConfig {
                datadir,
                spec,
                genesis,
                beneficiary,
                ..
            } = config.clone();
            tokio::task::spawn_blocking(move || Chain::open(&datadir, spec, &genesis, beneficiary))
                .await
                .expect("chain open does not panic")?
        };
        let chain = Arc::new(chain);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let driver: Box<dyn Consensus> = Box::new(Solo {
            mining: config.mining,
        });
        tracing::info!(
            consensus = driver.name(),
            head = chain.head().header.number,
            "chain opened"
        );
        let consensus = tokio::spawn(driver.run(chain.clone(), shutdown_rx));
        let mut rpc_config = config.rpc.clone();
        if config.mining != Mining::Instant {
            rpc_config.wait_for_inclusion = None;
        }
        let addr = rpc_config.addr;
        let (rpc_addr, rpc) = rpc::serve(chain.clone(), rpc_config)
            .await
            .map_err(|source| NodeError::Rpc { addr, source })?;
        Ok(Self {
            chain,
            rpc_addr,
            shutdown,
            rpc,
            consensus,
        })
    }

    /// Stops serving and producing blocks. Committed blocks are already durable.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.rpc.stop();
        self.rpc.stopped().await;
        let _ = self.consensus.await;
    }
}
