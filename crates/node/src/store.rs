//! Durable chain storage on redb.
//!
//! One redb write transaction per block holds everything the block changes: accounts, storage,
//! code, the Jellyfish Merkle tree that commits to them, the header, transactions, receipts and
//! the log index. redb commits atomically and durably (fsync) or not at all, so after a crash —
//! `kill -9` included — the database holds exactly the blocks whose commit returned, and the
//! node resumes from the last of them. No half-written block can ever be read.

use crate::commitment::{
    JMT_NODES, JMT_VALUES, Jmt, ProvenAccount, SlotProof, StateProof, TreeStore, account_key,
    slot_key, value_key,
};
use alloy_consensus::Header;
use alloy_rlp::{Decodable, Encodable};
use jmt::{KeyHash, OwnedValue};
use openledger_chain::{AccountState, StateDiff, StateError, StateView};
use openledger_primitives::{Address, B256, Bytes, U256};
use redb::{
    Database, MultimapTableDefinition, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, RwLock};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
/// Key: address (20) ‖ slot (32).
const STORAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("storage");
const CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("code");
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const BLOCK_NUMBERS: TableDefinition<&[u8], u64> = TableDefinition::new("block_numbers");
/// Concatenated 32-byte hashes of a block's transactions, in order.
const BLOCK_TXS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_txs");
const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("txs");
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts");
/// Log index: emitter address → numbers of blocks with a log from it.
const LOG_ADDRESSES: MultimapTableDefinition<&[u8], u64> =
    MultimapTableDefinition::new("log_addresses");
/// Log index: topic (any position) → numbers of blocks with a log carrying it.
const LOG_TOPICS: MultimapTableDefinition<&[u8], u64> = MultimapTableDefinition::new("log_topics");

const HEAD: &str = "head";

/// Storage failed. The message says what and where; the caller decides whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("state commitment error: {0}")]
    Commitment(String),
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("block {0} is not stored")]
    UnknownBlock(u64),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(impl From<$t> for StoreError { fn from(e: $t) -> Self { Self::Db(e.into()) } })*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError(e.to_string())
    }
}

/// A header together with its hash.
#[derive(Debug, Clone)]
pub struct SealedHeader {
    pub header: Header,
    pub hash: B256,
}

/// Where a transaction landed.
#[derive(Debug, Clone)]
pub struct StoredTx {
    pub block_number: u64,
    pub index: u32,
    pub sender: Address,
    /// EIP-2718 encoding.
    pub raw: Bytes,
}

impl StoredTx {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.raw.len());
        out.extend_from_slice(&self.block_number.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(self.sender.as_slice());
        out.extend_from_slice(&self.raw);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() < 32 {
            return Err(StoreError::Corrupt {
                table: "txs",
                detail: format!("{} bytes", bytes.len()),
            });
        }
        Ok(Self {
            block_number: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            index: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
            sender: Address::from_slice(&bytes[12..32]),
            raw: Bytes::copy_from_slice(&bytes[32..]),
        })
    }
}

/// What a transaction did, as its receipt reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReceipt {
    pub success: bool,
    pub gas_used: u64,
    pub cumulative_gas_used: u64,
    pub effective_gas_price: u128,
    pub contract_address: Option<Address>,
    pub logs: Vec<alloy_primitives::Log>,
    /// Index in the block of this receipt's first log.
    pub first_log_index: u64,
}

/// A block ready to be written: everything but the state root, which the store computes.
pub struct BlockDraft {
    pub header: Header,
    pub txs: Vec<(B256, StoredTx, StoredReceipt)>,
    pub diff: StateDiff,
}

/// The chain database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    head: Arc<RwLock<Option<SealedHeader>>>,
}

impl Store {
    /// Opens (or creates) the database at `path`, recovering whatever the last run committed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let store = Self {
            db: Arc::new(db),
            head: Arc::new(RwLock::new(None)),
        };
        let txn = store.db.begin_write()?;
        {
            // Create every table so read transactions never meet a missing one.
            txn.open_table(META)?;
            txn.open_table(ACCOUNTS)?;
            txn.open_table(STORAGE)?;
            txn.open_table(CODE)?;
            txn.open_table(HEADERS)?;
            txn.open_table(BLOCK_NUMBERS)?;
            txn.open_table(BLOCK_TXS)?;
            txn.open_table(TXS)?;
            txn.open_table(RECEIPTS)?;
            txn.open_table(JMT_NODES)?;
            txn.open_table(JMT_VALUES)?;
            txn.open_multimap_table(LOG_ADDRESSES)?;
            txn.open_multimap_table(LOG_TOPICS)?;
        }
        txn.commit()?;
        let head = store.read()?.head()?;
        *store.head.write().expect("head lock") = head;
        Ok(store)
    }

    /// The last committed block, if any.
    pub fn head(&self) -> Option<SealedHeader> {
        self.head.read().expect("head lock").clone()
    }

    /// A consistent read-only snapshot of the whole database.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        Ok(ReadView {
            txn: Arc::new(self.db.begin_read()?),
        })
    }

    /// Writes a block atomically: state, commitment, header, transactions, receipts and log
    /// index. Returns the sealed header with the state root filled in.
    pub fn commit_block(&self, draft: BlockDraft) -> Result<SealedHeader, StoreError> {
        let BlockDraft {
            mut header,
            txs,
            diff,
        } = draft;
        let number = header.number;
        let txn = self.db.begin_write()?;
        {
            let values = apply_state(&txn, &diff)?;
            header.state_root = update_tree(&txn, values, number)?;
        }
        let hash = header.hash_slow();
        {
            let mut encoded = Vec::with_capacity(600);
            header.encode(&mut encoded);
            txn.open_table(HEADERS)?
                .insert(number, encoded.as_slice())?;
            txn.open_table(BLOCK_NUMBERS)?
                .insert(hash.as_slice(), number)?;
            let mut hashes = Vec::with_capacity(32 * txs.len());
            let mut tx_table = txn.open_table(TXS)?;
            let mut receipt_table = txn.open_table(RECEIPTS)?;
            let mut by_address = txn.open_multimap_table(LOG_ADDRESSES)?;
            let mut by_topic = txn.open_multimap_table(LOG_TOPICS)?;
            for (tx_hash, tx, receipt) in &txs {
                hashes.extend_from_slice(tx_hash.as_slice());
                tx_table.insert(tx_hash.as_slice(), tx.encode().as_slice())?;
                let encoded = serde_json::to_vec(receipt).expect("receipts serialize");
                receipt_table.insert(tx_hash.as_slice(), encoded.as_slice())?;
                for log in &receipt.logs {
                    by_address.insert(log.address.as_slice(), number)?;
                    for topic in log.topics() {
                        by_topic.insert(topic.as_slice(), number)?;
                    }
                }
            }
            txn.open_table(BLOCK_TXS)?
                .insert(number, hashes.as_slice())?;
            txn.open_table(META)?.insert(HEAD, number)?;
        }
        txn.commit()?;
        let sealed = SealedHeader { header, hash };
        *self.head.write().expect("head lock") = Some(sealed.clone());
        Ok(sealed)
    }
}

fn storage_key(address: Address, slot: U256) -> [u8; 52] {
    let mut k = [0u8; 52];
    k[..20].copy_from_slice(address.as_slice());
    k[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    k
}

/// Writes the diff into the flat state tables and returns the tree updates it implies.
fn apply_state(
    txn: &redb::WriteTransaction,
    diff: &StateDiff,
) -> Result<Vec<(KeyHash, Option<OwnedValue>)>, StoreError> {
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let mut storage = txn.open_table(STORAGE)?;
    let mut code = txn.open_table(CODE)?;
    let mut values = Vec::new();
    for (hash, bytes) in &diff.codes {
        code.insert(hash.as_slice(), bytes.as_ref())?;
    }
    for (address, change) in &diff.accounts {
        if change.storage_cleared {
            let lo = storage_key(*address, U256::ZERO);
            let hi = storage_key(*address, U256::MAX);
            let mut gone = Vec::new();
            for entry in storage.range(lo.as_slice()..=hi.as_slice())? {
                let (k, _) = entry?;
                gone.push(U256::from_be_slice(&k.value()[20..]));
            }
            for slot in gone {
                storage.remove(storage_key(*address, slot).as_slice())?;
                values.push((slot_key(*address, slot), None));
            }
        }
        for (slot, value) in &change.storage {
            let key = storage_key(*address, *slot);
            if value.is_zero() {
                storage.remove(key.as_slice())?;
                values.push((slot_key(*address, *slot), None));
            } else {
                let bytes = value.to_be_bytes::<32>();
                storage.insert(key.as_slice(), bytes.as_slice())?;
                values.push((slot_key(*address, *slot), Some(bytes.to_vec())));
            }
        }
        match &change.account {
            Some(account) => {
                let bytes = account.encode();
                accounts.insert(address.as_slice(), bytes.as_slice())?;
                values.push((account_key(*address), Some(bytes.to_vec())));
            }
            None => {
                accounts.remove(address.as_slice())?;
                values.push((account_key(*address), None));
            }
        }
    }
    Ok(values)
}

/// Applies tree updates as version `number` and returns the new root.
fn update_tree(
    txn: &redb::WriteTransaction,
    mut values: Vec<(KeyHash, Option<OwnedValue>)>,
    number: u64,
) -> Result<B256, StoreError> {
    let commitment = |e: anyhow::Error| StoreError::Commitment(format!("{e:#}"));
    let mut nodes = txn.open_table(JMT_NODES)?;
    let mut stored_values = txn.open_table(JMT_VALUES)?;
    // A key may appear twice (storage cleared, then written); the last write wins.
    values.reverse();
    let mut seen = std::collections::HashSet::new();
    values.retain(|(k, _)| seen.insert(*k));
    let (root, batch) = {
        let reader = TreeStore {
            nodes: &nodes,
            values: &stored_values,
        };
        Jmt::new(&reader)
            .put_value_set(values, number)
            .map_err(commitment)?
    };
    for (key, node) in batch.node_batch.nodes() {
        let k = borsh::to_vec(key).map_err(|e| commitment(e.into()))?;
        let v = borsh::to_vec(node).map_err(|e| commitment(e.into()))?;
        nodes.insert(k.as_slice(), v.as_slice())?;
    }
    for ((version, key), value) in batch.node_batch.values() {
        let stored = match value {
            Some(v) => [&[1u8][..], v].concat(),
            None => vec![0u8],
        };
        stored_values.insert(value_key(*key, *version).as_slice(), stored.as_slice())?;
    }
    Ok(B256::from(root.0))
}

/// A consistent snapshot of the database for reads. Cheap to clone.
#[derive(Clone)]
pub struct ReadView {
    txn: Arc<ReadTransaction>,
}

impl ReadView {
    pub fn head(&self) -> Result<Option<SealedHeader>, StoreError> {
        match self.head_number()? {
            Some(n) => self.header(n),
            None => Ok(None),
        }
    }

    /// Number of the last committed block in this snapshot.
    pub fn head_number(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.txn.open_table(META)?.get(HEAD)?.map(|n| n.value()))
    }

    pub fn header(&self, number: u64) -> Result<Option<SealedHeader>, StoreError> {
        let table = self.txn.open_table(HEADERS)?;
        let Some(bytes) = table.get(number)? else {
            return Ok(None);
        };
        let header = Header::decode(&mut bytes.value()).map_err(|e| StoreError::Corrupt {
            table: "headers",
            detail: e.to_string(),
        })?;
        let hash = header.hash_slow();
        Ok(Some(SealedHeader { header, hash }))
    }

    pub fn block_number(&self, hash: B256) -> Result<Option<u64>, StoreError> {
        Ok(self
            .txn
            .open_table(BLOCK_NUMBERS)?
            .get(hash.as_slice())?
            .map(|v| v.value()))
    }

    pub fn block_tx_hashes(&self, number: u64) -> Result<Vec<B256>, StoreError> {
        let table = self.txn.open_table(BLOCK_TXS)?;
        let Some(bytes) = table.get(number)? else {
            return Ok(Vec::new());
        };
        Ok(bytes
            .value()
            .chunks_exact(32)
            .map(B256::from_slice)
            .collect())
    }

    pub fn tx(&self, hash: B256) -> Result<Option<StoredTx>, StoreError> {
        match self.txn.open_table(TXS)?.get(hash.as_slice())? {
            Some(v) => Ok(Some(StoredTx::decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn receipt(&self, hash: B256) -> Result<Option<StoredReceipt>, StoreError> {
        match self.txn.open_table(RECEIPTS)?.get(hash.as_slice())? {
            Some(v) => {
                serde_json::from_slice(v.value())
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        table: "receipts",
                        detail: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    /// Numbers of blocks in `from..=to` that may hold a log matching the filter, from the log
    /// index. `None` for a dimension means "any".
    pub fn log_candidate_blocks(
        &self,
        from: u64,
        to: u64,
        addresses: &[Address],
        first_topics: &[B256],
    ) -> Result<Vec<u64>, StoreError> {
        let mut blocks: Option<std::collections::BTreeSet<u64>> = None;
        if !addresses.is_empty() {
            let table = self.txn.open_multimap_table(LOG_ADDRESSES)?;
            let mut set = std::collections::BTreeSet::new();
            for a in addresses {
                for v in table.get(a.as_slice())? {
                    let n = v?.value();
                    if (from..=to).contains(&n) {
                        set.insert(n);
                    }
                }
            }
            blocks = Some(set);
        }
        if !first_topics.is_empty() {
            let table = self.txn.open_multimap_table(LOG_TOPICS)?;
            let mut set = std::collections::BTreeSet::new();
            for t in first_topics {
                for v in table.get(t.as_slice())? {
                    let n = v?.value();
                    if (from..=to).contains(&n) {
                        set.insert(n);
                    }
                }
            }
            blocks = Some(match blocks {
                Some(b) => b.intersection(&set).copied().collect(),
                None => set,
            });
        }
        Ok(match blocks {
            Some(b) => b.into_iter().collect(),
            None => (from..=to).collect(),
        })
    }

    /// The state after block `number` (the latest state when `number` is the head).
    pub fn state_at(&self, number: u64) -> Result<StateAt, StoreError> {
        let head = self.head_number()?;
        Ok(StateAt {
            view: self.clone(),
            number,
            latest: head == Some(number),
        })
    }

    /// Proves an account and some of its slots at block `number`.
    pub fn proof(
        &self,
        address: Address,
        slots: &[U256],
        number: u64,
    ) -> Result<StateProof, StoreError> {
        let header = self
            .header(number)?
            .ok_or(StoreError::UnknownBlock(number))?;
        let nodes = self.txn.open_table(JMT_NODES)?;
        let values = self.txn.open_table(JMT_VALUES)?;
        let store = TreeStore {
            nodes: &nodes,
            values: &values,
        };
        let tree = Jmt::new(&store);
        let commitment = |e: anyhow::Error| StoreError::Commitment(format!("{e:#}"));
        let encode = |p: &jmt::proof::SparseMerkleProof<sha2::Sha256>| {
            Bytes::from(borsh::to_vec(p).expect("proofs serialize"))
        };
        let (value, proof) = tree
            .get_with_proof(account_key(address), number)
            .map_err(commitment)?;
        let account = match value {
            Some(v) => {
                let a = AccountState::decode(&v).ok_or_else(|| StoreError::Corrupt {
                    table: "jmt_values",
                    detail: "account leaf".into(),
                })?;
                Some(ProvenAccount {
                    nonce: a.nonce,
                    balance: a.balance,
                    code_hash: a.code_hash,
                })
            }
            None => None,
        };
        let mut storage = Vec::with_capacity(slots.len());
        for slot in slots {
            let (value, proof) = tree
                .get_with_proof(slot_key(address, *slot), number)
                .map_err(commitment)?;
            let value = value.map(|v| U256::from_be_slice(&v)).unwrap_or_default();
            storage.push(SlotProof {
                key: *slot,
                value,
                proof: encode(&proof),
            });
        }
        Ok(StateProof {
            address,
            block_number: number,
            state_root: header.header.state_root,
            account,
            account_proof: encode(&proof),
            storage,
        })
    }

    fn tree_value(&self, key: KeyHash, number: u64) -> Result<Option<OwnedValue>, StoreError> {
        let nodes = self.txn.open_table(JMT_NODES)?;
        let values = self.txn.open_table(JMT_VALUES)?;
        use jmt::storage::TreeReader;
        TreeStore {
            nodes: &nodes,
            values: &values,
        }
        .get_value_option(number, key)
        .map_err(|e| StoreError::Commitment(e.to_string()))
    }
}

/// State at one block: the flat tables for the head, the tree's versioned values for history.
#[derive(Clone)]
pub struct StateAt {
    view: ReadView,
    number: u64,
    latest: bool,
}

impl StateAt {
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl StateView for StateAt {
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        let bytes = if self.latest {
            let table = self
                .view
                .txn
                .open_table(ACCOUNTS)
                .map_err(StoreError::from)?;
            table
                .get(address.as_slice())
                .map_err(StoreError::from)?
                .map(|v| v.value().to_vec())
        } else {
            self.view.tree_value(account_key(address), self.number)?
        };
        match bytes {
            Some(b) => AccountState::decode(&b)
                .map(Some)
                .ok_or_else(|| StateError(format!("corrupt account record for {address}"))),
            None => Ok(None),
        }
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        let bytes = if self.latest {
            let table = self
                .view
                .txn
                .open_table(STORAGE)
                .map_err(StoreError::from)?;
            table
                .get(storage_key(address, slot).as_slice())
                .map_err(StoreError::from)?
                .map(|v| v.value().to_vec())
        } else {
            self.view.tree_value(slot_key(address, slot), self.number)?
        };
        Ok(bytes.map(|b| U256::from_be_slice(&b)).unwrap_or_default())
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StateError> {
        let table = self.view.txn.open_table(CODE).map_err(StoreError::from)?;
        Ok(table
            .get(code_hash.as_slice())
            .map_err(StoreError::from)?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        // BLOCKHASH sees the 256 most recent blocks before the one executing.
        if number > self.number || self.number - number >= 256 {
            return Ok(B256::ZERO);
        }
        Ok(self
            .view
            .header(number)?
            .map(|h| h.hash)
            .unwrap_or_default())
    }
}
