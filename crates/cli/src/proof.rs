//! `openledger verify-proof`: check a state proof against a block header's state root.

use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_node::StateProof;
use openledger_primitives::{Address, B256, U256};
use openledger_wallet::RpcClient;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Node to ask for the proof and the header.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub rpc: String,
    /// Account to prove.
    #[arg(long, required_unless_present = "proof")]
    pub address: Option<Address>,
    /// Storage slots of the account to prove too.
    #[arg(long = "slot")]
    pub slots: Vec<U256>,
    /// Block number (default: latest).
    #[arg(long)]
    pub block: Option<u64>,
    /// Check a proof saved as JSON (from `openledger_getProof`) instead of fetching one.
    #[arg(long)]
    pub proof: Option<PathBuf>,
    /// Trusted state root to check against; by default it is read from the block header.
    #[arg(long)]
    pub state_root: Option<B256>,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let client = RpcClient::new(args.rpc.clone());
    let block = args
        .block
        .map(|b| format!("{b:#x}"))
        .unwrap_or_else(|| "latest".into());
    let proof: StateProof = match &args.proof {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("{} is not a proof from openledger_getProof", path.display())
            })?
        }
        None => {
            let address = args.address.context("--address is required")?;
            client.call("openledger_getProof", json!([address, args.slots, block]))?
        }
    };
    let state_root = match args.state_root {
        Some(root) => root,
        None => {
            let header: serde_json::Value = client.call(
                "eth_getBlockByNumber",
                json!([format!("{:#x}", proof.block_number), false]),
            )?;
            let root = header
                .get("stateRoot")
                .and_then(|r| r.as_str())
                .with_context(|| {
                    format!("the node has no header for block {}", proof.block_number)
                })?;
            root.parse()
                .context("stateRoot in the header is not a 32-byte hash")?
        }
    };
    if let Err(e) = proof.verify(state_root) {
        bail!("proof INVALID: {e}");
    }
    println!(
        "proof valid against state root {state_root} of block {}",
        proof.block_number
    );
    match &proof.account {
        Some(a) => println!(
            "  account {}: nonce {}, balance {} wei, code hash {}",
            proof.address, a.nonce, a.balance, a.code_hash
        ),
        None => println!("  account {} does not exist", proof.address),
    }
    for slot in &proof.storage {
        println!("  slot {:#x} = {:#x}", slot.key, slot.value);
    }
    Ok(())
}
