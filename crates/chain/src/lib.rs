//! Deterministic execution of OpenLedger blocks.
//!
//! This crate turns an ordered list of signed transactions plus a parent state into receipts and
//! a state diff, on revm with OpenLedger's stateful precompiles installed. It never touches a
//! clock, a file or the network and uses no floats: the same inputs give the same block on every
//! node, whoever ordered the transactions (the consensus driver lives in `node`).
//!
//! Boundaries: state comes in through [`state::StateView`] and leaves as a [`state::StateDiff`];
//! storage, commitment and RPC belong to the node.

pub mod executor;
pub mod genesis;
pub mod modules;
pub mod spec;
pub mod state;
pub mod tx;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use executor::{BlockContext, ExecutedBlock, ExecutedTx, execute_block};
pub use genesis::Genesis;
pub use revm::primitives::hardfork::SpecId;
pub use spec::ChainSpec;
pub use state::{AccountState, StateDiff, StateError, StateView};
pub use tx::{RecoveredTx, TxError};
