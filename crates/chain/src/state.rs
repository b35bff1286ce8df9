//! The executor's window on state: a read-only [`StateView`] of the parent block, an in-memory
//! overlay ([`BlockState`]) that revm reads and writes while a block executes, and the
//! [`StateDiff`] that overlay hands to storage when the block is done.

use openledger_primitives::{Address, B256, Bytes, U256};
use revm::bytecode::Bytecode;
use revm::database_interface::{DBErrorMarker, Database, DatabaseCommit};
use revm::primitives::{AddressMap, KECCAK_EMPTY, StorageKey, StorageValue};
use revm::state::{Account, AccountInfo};
use std::collections::{BTreeMap, HashMap};

/// Nonce, balance and code hash of an account: what the state root commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountState {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

impl AccountState {
    pub const ENCODED_LEN: usize = 8 + 32 + 32;

    pub fn has_code(&self) -> bool {
        self.code_hash != KECCAK_EMPTY && self.code_hash != B256::ZERO
    }

    /// Fixed-width encoding: nonce (8, big-endian) ‖ balance (32) ‖ code hash (32).
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..40].copy_from_slice(&self.balance.to_be_bytes::<32>());
        out[40..].copy_from_slice(self.code_hash.as_slice());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        Some(Self {
            nonce: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            balance: U256::from_be_slice(&bytes[8..40]),
            code_hash: B256::from_slice(&bytes[40..]),
        })
    }

    fn to_info(self) -> AccountInfo {
        AccountInfo {
            balance: self.balance,
            nonce: self.nonce,
            code_hash: self.code_hash,
            code: None,
            ..Default::default()
        }
    }

    fn from_info(info: &AccountInfo) -> Self {
        Self {
            nonce: info.nonce,
            balance: info.balance,
            code_hash: info.code_hash,
        }
    }
}

/// Storage failed underneath the executor. Execution stops; nothing is committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct StateError(pub String);

impl DBErrorMarker for StateError {}

/// Read access to the state of one block. Implemented by the node's store.
pub trait StateView {
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError>;
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError>;
    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StateError>;
    /// Hash of an earlier block, for the BLOCKHASH opcode (zero when unknown).
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
}

impl<T: StateView + ?Sized> StateView for &T {
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        (**self).account(address)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        (**self).storage(address, slot)
    }
    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StateError> {
        (**self).code(code_hash)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        (**self).block_hash(number)
    }
}

/// How one account changed in a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDiff {
    /// The account after the block; `None` when it was deleted (self-destruct, EIP-161).
    pub account: Option<AccountState>,
    /// All earlier storage of the account is gone (deleted or re-created).
    pub storage_cleared: bool,
    /// Slots written in the block, with their final values (zero means deleted).
    pub storage: BTreeMap<U256, U256>,
}

/// Everything a block changed, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDiff {
    pub accounts: BTreeMap<Address, AccountDiff>,
    /// Code deployed in the block, by hash.
    pub codes: BTreeMap<B256, Bytes>,
}

/// A block's working state: reads fall through to the parent [`StateView`], writes stay here.
pub struct BlockState<V> {
    view: V,
    accounts: HashMap<Address, Option<AccountState>>,
    storage: HashMap<(Address, U256), U256>,
    cleared: std::collections::HashSet<Address>,
    codes: HashMap<B256, Bytecode>,
    diff: StateDiff,
}

impl<V: StateView> BlockState<V> {
    pub fn new(view: V) -> Self {
        Self {
            view,
            accounts: HashMap::new(),
            storage: HashMap::new(),
            cleared: Default::default(),
            codes: HashMap::new(),
            diff: StateDiff::default(),
        }
    }

    pub fn view(&self) -> &V {
        &self.view
    }

    /// The account as the block sees it now.
    pub fn account(&mut self, address: Address) -> Result<Option<AccountState>, StateError> {
        if let Some(a) = self.accounts.get(&address) {
            return Ok(*a);
        }
        let a = self.view.account(address)?;
        self.accounts.insert(address, a);
        Ok(a)
    }

    /// Credits `amount` to an account outside of any transaction (fee payouts).
    pub fn credit(&mut self, address: Address, amount: U256) -> Result<(), StateError> {
        if amount.is_zero() {
            return Ok(());
        }
        let mut account = self.account(address)?.unwrap_or(AccountState {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: KECCAK_EMPTY,
        });
        account.balance = account.balance.saturating_add(amount);
        self.set_account(address, Some(account));
        Ok(())
    }

    /// Writes a storage slot outside of any transaction (genesis).
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) {
        self.storage.insert((address, slot), value);
        self.diff
            .accounts
            .entry(address)
            .or_default()
            .storage
            .insert(slot, value);
    }

    /// Sets or deletes an account outside of any transaction (genesis, fee payouts).
    pub fn set_account(&mut self, address: Address, account: Option<AccountState>) {
        self.accounts.insert(address, account);
        self.diff.accounts.entry(address).or_default().account = account;
    }

    pub fn insert_code(&mut self, code: Bytes) -> B256 {
        let bytecode = Bytecode::new_raw(code.clone());
        let hash = bytecode.hash_slow();
        self.diff.codes.insert(hash, code);
        self.codes.insert(hash, bytecode);
        hash
    }

    pub fn into_diff(self) -> StateDiff {
        self.diff
    }

    fn clear_storage(&mut self, address: Address) {
        self.storage.retain(|(a, _), _| *a != address);
        self.cleared.insert(address);
        let entry = self.diff.accounts.entry(address).or_default();
        entry.storage_cleared = true;
        entry.storage.clear();
    }

    fn commit_account(&mut self, address: Address, account: Account) {
        if !account.is_touched() {
            return;
        }
        // Self-destructed and, per EIP-161, touched empty accounts cease to exist.
        if account.is_selfdestructed() || account.is_empty() {
            let existed = self.accounts.get(&address).copied().flatten().is_some()
                || self.diff.accounts.contains_key(&address);
            if account.is_selfdestructed() {
                self.clear_storage(address);
            }
            if existed || account.is_selfdestructed() {
                self.set_account(address, None);
            } else {
                self.accounts.insert(address, None);
            }
            return;
        }
        if account.is_created() {
            self.clear_storage(address);
        }
        if let Some(code) = &account.info.code
            && !code.is_empty()
            && !self.codes.contains_key(&account.info.code_hash)
        {
            self.codes.insert(account.info.code_hash, code.clone());
            self.diff
                .codes
                .insert(account.info.code_hash, code.original_bytes());
        }
        self.set_account(address, Some(AccountState::from_info(&account.info)));
        for (slot, value) in account.storage {
            if value.is_changed() {
                self.set_storage(address, slot, value.present_value());
            }
        }
    }
}

impl<V: StateView> Database for BlockState<V> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        Ok(self.account(address)?.map(AccountState::to_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY || code_hash == B256::ZERO {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.codes.get(&code_hash) {
            return Ok(code.clone());
        }
        let raw = self
            .view
            .code(code_hash)?
            .ok_or_else(|| StateError(format!("code {code_hash} is missing from the store")))?;
        let code = Bytecode::new_raw(raw);
        self.codes.insert(code_hash, code.clone());
        Ok(code)
    }

    fn storage(&mut self, address: Address, index: StorageKey) -> Result<StorageValue, StateError> {
        if let Some(v) = self.storage.get(&(address, index)) {
            return Ok(*v);
        }
        if self.cleared.contains(&address) {
            return Ok(U256::ZERO);
        }
        let v = self.view.storage(address, index)?;
        self.storage.insert((address, index), v);
        Ok(v)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.view.block_hash(number)
    }
}

impl<V: StateView> DatabaseCommit for BlockState<V> {
    fn commit(&mut self, changes: AddressMap<Account>) {
        for (address, account) in changes {
            self.commit_account(address, account);
        }
    }
}

/// A [`StateView`] over plain maps, for tests and genesis.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    pub accounts: HashMap<Address, AccountState>,
    pub storage: HashMap<(Address, U256), U256>,
    pub codes: HashMap<B256, Bytes>,
}

impl MemoryState {
    /// Applies a diff, as the node's store would.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (hash, code) in &diff.codes {
            self.codes.insert(*hash, code.clone());
        }
        for (address, d) in &diff.accounts {
            if d.storage_cleared {
                self.storage.retain(|(a, _), _| a != address);
            }
            for (slot, value) in &d.storage {
                if value.is_zero() {
                    self.storage.remove(&(*address, *slot));
                } else {
                    self.storage.insert((*address, *slot), *value);
                }
            }
            match d.account {
                Some(a) => {
                    self.accounts.insert(*address, a);
                }
                None => {
                    self.accounts.remove(address);
                }
            }
        }
    }
}

impl StateView for MemoryState {
    fn account(&self, address: Address) -> Result<Option<AccountState>, StateError> {
        Ok(self.accounts.get(&address).copied())
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        Ok(self
            .storage
            .get(&(address, slot))
            .copied()
            .unwrap_or_default())
    }
    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StateError> {
        Ok(self.codes.get(&code_hash).cloned())
    }
    fn block_hash(&self, _number: u64) -> Result<B256, StateError> {
        Ok(B256::ZERO)
    }
}
