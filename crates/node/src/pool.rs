//! The transaction pool: signed transactions waiting for a block.
//!
//! Admission checks a transaction against the latest state plus what the pool already holds for
//! its sender, so a client learns at once (with geth's error text) that a nonce is used or
//! skipped, or that funds cannot cover it — and nothing is stored for a refused transaction.
//! Nonce gaps are refused rather than queued: with blocks on demand there is no reason to hold
//! a transaction that cannot run.

use openledger_chain::{RecoveredTx, StateView, TxError};
use openledger_primitives::{Address, B256, U256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::{Notify, watch};

/// Most transactions the pool holds at once.
pub const POOL_CAPACITY: usize = 50_000;

#[derive(Default)]
struct Inner {
    /// Arrival order; a sender's transactions arrive in nonce order because gaps are refused.
    queue: VecDeque<B256>,
    by_hash: HashMap<B256, RecoveredTx>,
    by_sender: HashMap<Address, SenderTxs>,
}

/// One sender's pending transactions.
#[derive(Default)]
struct SenderTxs {
    /// Nonce → hash of the pending transaction with that nonce.
    by_nonce: std::collections::BTreeMap<u64, B256>,
    /// Sum of their maximum costs, kept so admission stays O(log n) per transaction.
    cost: U256,
}

/// The nonce after a sender's last pending transaction, or its state nonce if none is pending.
fn next_nonce(pending: Option<&SenderTxs>, state_nonce: u64) -> u64 {
    pending
        .and_then(|m| m.by_nonce.last_key_value())
        .map_or(state_nonce, |(n, _)| n + 1)
        .max(state_nonce)
}

pub struct Pool {
    inner: Mutex<Inner>,
    /// Wakes the block producer when a transaction arrives.
    pub arrived: Notify,
    /// Number of the last committed block, for callers waiting on inclusion.
    pub committed: watch::Sender<u64>,
}

impl Pool {
    pub fn new(head: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            arrived: Notify::new(),
            committed: watch::channel(head).0,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("pool lock").by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, hash: &B256) -> bool {
        self.inner
            .lock()
            .expect("pool lock")
            .by_hash
            .contains_key(hash)
    }

    pub fn get(&self, hash: &B256) -> Option<RecoveredTx> {
        self.inner
            .lock()
            .expect("pool lock")
            .by_hash
            .get(hash)
            .cloned()
    }

    /// The next nonce `sender` should use, counting pending transactions.
    pub fn pending_nonce(&self, sender: Address, state_nonce: u64) -> u64 {
        let inner = self.inner.lock().expect("pool lock");
        next_nonce(inner.by_sender.get(&sender), state_nonce)
    }

    /// Admits a transaction whose stateless checks passed, or says why not.
    pub fn add(
        &self,
        tx: RecoveredTx,
        state: &impl StateView,
        base_fee: u64,
    ) -> Result<B256, TxError> {
        let account = state
            .account(tx.sender)
            .map_err(|e| TxError::StateUnavailable(e.to_string()))?
            .unwrap_or_default();
        let mut inner = self.inner.lock().expect("pool lock");
        if inner.by_hash.contains_key(&tx.hash) {
            return Err(TxError::AlreadyKnown);
        }
        if inner.by_hash.len() >= POOL_CAPACITY {
            return Err(TxError::PoolFull);
        }
        let pending = inner.by_sender.get(&tx.sender);
        let next = next_nonce(pending, account.nonce);
        let nonce = tx.nonce();
        if nonce < account.nonce {
            return Err(TxError::NonceTooLow {
                address: tx.sender,
                tx: nonce,
                next,
            });
        }
        let replaces = pending.and_then(|m| m.by_nonce.get(&nonce)).copied();
        if replaces.is_none() && nonce > next {
            return Err(TxError::NonceTooHigh {
                address: tx.sender,
                tx: nonce,
                next,
            });
        }
        if tx.max_fee_per_gas() < base_fee as u128 {
            return Err(TxError::FeeCapTooLow {
                address: tx.sender,
                max_fee: tx.max_fee_per_gas(),
                base_fee,
            });
        }
        // Funds must cover this transaction plus everything the sender already has pending
        // (less the transaction it replaces, if any).
        let replaced_cost = replaces
            .and_then(|h| inner.by_hash.get(&h))
            .map(RecoveredTx::max_cost)
            .unwrap_or_default();
        let committed = pending
            .map(|m| m.cost)
            .unwrap_or_default()
            .saturating_sub(replaced_cost);
        let want = tx.max_cost().saturating_add(committed);
        if account.balance < want {
            return Err(TxError::InsufficientFunds {
                address: tx.sender,
                have: account.balance,
                want,
            });
        }
        if let Some(old_hash) = replaces {
            // A replacement must raise the fee cap by at least 10 %, as in geth.
            let old = &inner.by_hash[&old_hash];
            if tx.max_fee_per_gas() * 10 < old.max_fee_per_gas() * 11 {
                return Err(TxError::ReplacementUnderpriced);
            }
            inner.by_hash.remove(&old_hash);
            inner.queue.retain(|h| *h != old_hash);
        }
        let hash = tx.hash;
        let sender = inner.by_sender.entry(tx.sender).or_default();
        sender.by_nonce.insert(nonce, hash);
        sender.cost = sender
            .cost
            .saturating_sub(replaced_cost)
            .saturating_add(tx.max_cost());
        inner.queue.push_back(hash);
        inner.by_hash.insert(hash, tx);
        drop(inner);
        self.arrived.notify_one();
        Ok(hash)
    }

    /// Pending transactions in arrival order, up to `max_gas` of gas limits in total.
    pub fn peek(&self, max_gas: u64) -> Vec<RecoveredTx> {
        let inner = self.inner.lock().expect("pool lock");
        let mut gas = 0u64;
        let mut out = Vec::new();
        for hash in &inner.queue {
            let tx = &inner.by_hash[hash];
            if gas + tx.gas_limit() > max_gas {
                break;
            }
            gas += tx.gas_limit();
            out.push(tx.clone());
        }
        out
    }

    /// Drops transactions that were included in, or skipped by, a committed block.
    pub fn remove(&self, hashes: impl IntoIterator<Item = B256>) {
        let mut inner = self.inner.lock().expect("pool lock");
        let mut removed = std::collections::HashSet::new();
        for hash in hashes {
            if let Some(tx) = inner.by_hash.remove(&hash) {
                if let Some(m) = inner.by_sender.get_mut(&tx.sender) {
                    // Only the transaction still pending under this nonce counts (a
                    // replacement may have taken its place).
                    if m.by_nonce.get(&tx.nonce()) == Some(&hash) {
                        m.by_nonce.remove(&tx.nonce());
                        m.cost = m.cost.saturating_sub(tx.max_cost());
                    }
                    if m.by_nonce.is_empty() {
                        inner.by_sender.remove(&tx.sender);
                    }
                }
                removed.insert(hash);
            }
        }
        if !removed.is_empty() {
            inner.queue.retain(|h| !removed.contains(h));
        }
    }
}
