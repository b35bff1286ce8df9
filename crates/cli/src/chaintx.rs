//! Signing, sending and reading calls to a protocol precompile, shared by `stake` and `gov`.
//!
//! Transactions are estimated first (`send_call`), so a call that would revert is refused
//! before it is sent, and the revert data is decoded into the precompile's own error by the
//! caller's `explain` function.

use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_primitives::{Address, B256, Bytes, U256};
use openledger_wallet::{RpcClient, RpcError, TransferError, send_call};
use serde_json::{Value, json};

use crate::wallet::KeystoreArgs;

/// Where the node is and how to sign.
#[derive(Args, Debug, Clone)]
pub struct Signing {
    /// The node's JSON-RPC URL.
    #[arg(
        long,
        env = "OPENLEDGER_RPC",
        default_value = "http://127.0.0.1:8545",
        global = true
    )]
    pub rpc: String,
    /// Sign with this keystore account (name or file).
    #[arg(long, global = true, conflicts_with = "private_key")]
    pub account: Option<String>,
    /// Sign with this hex private key (dev accounts; prefer --account elsewhere).
    #[arg(
        long,
        env = "OPENLEDGER_PRIVATE_KEY",
        global = true,
        hide_env_values = true
    )]
    pub private_key: Option<String>,
    #[command(flatten)]
    pub keys: KeystoreArgs,
}

impl Signing {
    pub fn signer(&self) -> Result<Option<PrivateKeySigner>> {
        if let Some(key) = &self.private_key {
            return Ok(Some(
                key.trim()
                    .parse()
                    .context("--private-key is not a valid hex private key")?,
            ));
        }
        let Some(account) = &self.account else {
            return Ok(None);
        };
        let store = crate::wallet::keystore(&self.keys)?;
        let password = crate::wallet::password(&self.keys, false)?;
        Ok(Some(store.unlock(account, &password)?))
    }

    pub fn require_signer(&self) -> Result<PrivateKeySigner> {
        self.signer()?
            .context("this command signs a transaction: pass --account NAME or --private-key")
    }
}

/// Turns an RPC failure into a readable error, decoding the precompile's revert if it can.
pub type Explain = fn(RpcError) -> anyhow::Error;

/// Sends `input` (and `value` wei) to the precompile `to` and waits for a successful receipt.
pub fn transact(
    client: &RpcClient,
    signer: &PrivateKeySigner,
    to: Address,
    input: Vec<u8>,
    value: U256,
    explain: Explain,
) -> Result<Value> {
    match send_call(client, signer, to, value, Bytes::from(input)) {
        Ok(receipt) => {
            if receipt["status"].as_str() != Some("0x1") {
                bail!(
                    "transaction {} failed on chain (block {})",
                    receipt["transactionHash"].as_str().unwrap_or("?"),
                    receipt["blockNumber"].as_str().unwrap_or("?")
                );
            }
            Ok(receipt)
        }
        Err(TransferError::Rpc(e)) => Err(explain(e)),
        Err(e) => Err(e.into()),
    }
}

/// An `eth_call` at the latest block, decoded.
pub fn view<C: SolCall>(
    client: &RpcClient,
    to: Address,
    call: C,
    explain: Explain,
) -> Result<C::Return> {
    let out: String = client
        .call(
            "eth_call",
            json!([{ "to": to, "data": format!("0x{}", alloy_primitives::hex::encode(call.abi_encode())) }, "latest"]),
        )
        .map_err(explain)?;
    let bytes = alloy_primitives::hex::decode(&out)?;
    C::abi_decode_returns(&bytes).context("cannot decode the precompile's answer")
}

/// Every log of event `E` in a receipt, decoded.
pub fn events<E: SolEvent>(receipt: &Value) -> Vec<E> {
    let logs = receipt["logs"].as_array().cloned().unwrap_or_default();
    logs.iter()
        .filter_map(|log| {
            let topics: Vec<B256> = log["topics"]
                .as_array()?
                .iter()
                .filter_map(|t| t.as_str()?.parse().ok())
                .collect();
            if topics.first() != Some(&E::SIGNATURE_HASH) {
                return None;
            }
            let data = alloy_primitives::hex::decode(log["data"].as_str().unwrap_or("0x")).ok()?;
            E::decode_raw_log(topics, &data).ok()
        })
        .collect()
}

/// The first log of event `E` in a receipt.
pub fn event<E: SolEvent>(receipt: &Value) -> Result<E> {
    events::<E>(receipt)
        .into_iter()
        .next()
        .with_context(|| format!("the receipt has no {} event", E::SIGNATURE))
}

/// The current block number.
pub fn block_number(client: &RpcClient) -> Result<u64> {
    let hex: String = client.call("eth_blockNumber", json!([]))?;
    u64::from_str_radix(hex.trim_start_matches("0x"), 16)
        .with_context(|| format!("node returned a bad block number {hex:?}"))
}
