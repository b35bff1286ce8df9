//! The state commitment: a Jellyfish Merkle tree over every account and storage slot, kept in
//! the same redb database as the state so one write transaction moves both.
//!
//! Leaves are keyed by `sha256("acct" ‖ address)` and `sha256("slot" ‖ address ‖ slot)`; an
//! account leaf holds [`AccountState::encode`], a slot leaf its 32-byte value (a zero slot has no
//! leaf). The tree is versioned by block number, so its value table doubles as the state history
//! behind `eth_getBalance(…, blockNumber)` and proofs at old blocks.
//!
//! `jmt` is kept behind this module (and [`StateProof`]) so it can be swapped for an Ethereum
//! MPT later without touching the rest of the node.

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, RootHash, Version};
use openledger_chain::AccountState;
use openledger_primitives::{Address, B256, U256};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub(crate) const JMT_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
/// Key: key hash (32) ‖ version (8, big-endian). Value: 0 = deleted, 1 ‖ bytes = present.
pub(crate) const JMT_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_values");

pub type Jmt<'a, R> = jmt::JellyfishMerkleTree<'a, R, Sha256>;

pub fn account_key(address: Address) -> KeyHash {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(b"acct");
    k.extend_from_slice(address.as_slice());
    KeyHash::with::<Sha256>(k)
}

pub fn slot_key(address: Address, slot: U256) -> KeyHash {
    let mut k = Vec::with_capacity(56);
    k.extend_from_slice(b"slot");
    k.extend_from_slice(address.as_slice());
    k.extend_from_slice(&slot.to_be_bytes::<32>());
    KeyHash::with::<Sha256>(k)
}

pub(crate) fn value_key(key: KeyHash, version: Version) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&key.0);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

/// Reads the tree from any redb table handle (read or write transaction).
pub(crate) struct TreeStore<'t, N, V> {
    pub nodes: &'t N,
    pub values: &'t V,
}

impl<N, V> TreeReader for TreeStore<'_, N, V>
where
    N: ReadableTable<&'static [u8], &'static [u8]>,
    V: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = borsh::to_vec(node_key)?;
        match self.nodes.get(key.as_slice())? {
            Some(bytes) => Ok(Some(borsh::from_slice(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let lo = value_key(key_hash, 0);
        let hi = value_key(key_hash, max_version);
        let mut range = self.values.range(lo.as_slice()..=hi.as_slice())?;
        match range.next_back() {
            Some(entry) => {
                let (_, v) = entry?;
                let v = v.value();
                Ok(if v.first() == Some(&1) {
                    Some(v[1..].to_vec())
                } else {
                    None
                })
            }
            None => Ok(None),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only used when restoring a tree from a snapshot, which this node does not do.
        anyhow::bail!("tree restore is not supported")
    }
}

/// A proof that an account (and some of its slots) had given values in the state whose root a
/// block header carries. Anyone can check it with [`StateProof::verify`] and nothing but the
/// header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateProof {
    pub address: Address,
    #[serde(with = "alloy_serde::quantity")]
    pub block_number: u64,
    pub state_root: B256,
    /// `None` when the account does not exist (the proof then shows its absence).
    pub account: Option<ProvenAccount>,
    /// Borsh-encoded `jmt` sparse Merkle proof of the account leaf.
    pub account_proof: alloy_primitives::Bytes,
    pub storage: Vec<SlotProof>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProvenAccount {
    #[serde(with = "alloy_serde::quantity")]
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlotProof {
    pub key: U256,
    pub value: U256,
    pub proof: alloy_primitives::Bytes,
}

/// Why a proof does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the proof was made against state root {proof}, not the trusted root {trusted}")]
    RootMismatch { proof: B256, trusted: B256 },
    #[error("the {what} proof is not a valid encoding: {detail}")]
    Malformed { what: String, detail: String },
    #[error("the {what} proof does not match the state root: {detail}")]
    Invalid { what: String, detail: String },
}

impl StateProof {
    /// Checks every part of the proof against `state_root` (take it from a header you trust).
    pub fn verify(&self, state_root: B256) -> Result<(), ProofError> {
        if self.state_root != state_root {
            return Err(ProofError::RootMismatch {
                proof: self.state_root,
                trusted: state_root,
            });
        }
        let root = RootHash(state_root.0);
        let account_value = self.account.as_ref().map(|a| {
            AccountState {
                nonce: a.nonce,
                balance: a.balance,
                code_hash: a.code_hash,
            }
            .encode()
            .to_vec()
        });
        check(
            &self.account_proof,
            root,
            account_key(self.address),
            account_value,
            "account".into(),
        )?;
        for slot in &self.storage {
            let value = (!slot.value.is_zero()).then(|| slot.value.to_be_bytes::<32>().to_vec());
            check(
                &slot.proof,
                root,
                slot_key(self.address, slot.key),
                value,
                format!("slot {}", slot.key),
            )?;
        }
        Ok(())
    }
}

fn check(
    proof: &[u8],
    root: RootHash,
    key: KeyHash,
    value: Option<Vec<u8>>,
    what: String,
) -> Result<(), ProofError> {
    let proof: jmt::proof::SparseMerkleProof<Sha256> =
        borsh::from_slice(proof).map_err(|e| ProofError::Malformed {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    proof
        .verify(root, key, value)
        .map_err(|e| ProofError::Invalid {
            what,
            detail: e.to_string(),
        })
}
