//! The state a chain starts from.

use crate::modules::{self, ProtocolParams, protocol_params};
use crate::state::{AccountState, BlockState, MemoryState, StateDiff};
use openledger_primitives::{Address, U256, addresses::PROTOCOL_PARAMS};
use revm::primitives::KECCAK_EMPTY;

/// Genesis allocation: funded accounts and parameter overrides.
#[derive(Debug, Clone, Default)]
pub struct Genesis {
    pub alloc: Vec<(Address, U256)>,
    /// Parameter values that differ from the registry defaults.
    pub params: Vec<(String, U256)>,
    pub timestamp: u64,
}

impl Genesis {
    /// The genesis state as a diff over an empty state.
    ///
    /// Every module account gets nonce 1 so EIP-161 never treats it as empty and drops its
    /// storage, and every protocol parameter is written explicitly so it can be read and proven
    /// from storage from block 0 on.
    pub fn state(&self) -> StateDiff {
        let mut state = BlockState::new(MemoryState::default());
        for (address, balance) in &self.alloc {
            state.set_account(
                *address,
                Some(AccountState {
                    nonce: 0,
                    balance: *balance,
                    code_hash: KECCAK_EMPTY,
                }),
            );
        }
        for module in modules::modules() {
            state.set_account(
                module.address(),
                Some(AccountState {
                    nonce: 1,
                    balance: U256::ZERO,
                    code_hash: KECCAK_EMPTY,
                }),
            );
        }
        for spec in protocol_params::registry() {
            let value = self
                .params
                .iter()
                .find(|(name, _)| name == spec.name)
                .map(|(_, v)| *v)
                .unwrap_or(spec.default);
            state.set_storage(
                PROTOCOL_PARAMS,
                protocol_params::slot(spec.name),
                ProtocolParams::stored(value),
            );
        }
        state.into_diff()
    }
}
