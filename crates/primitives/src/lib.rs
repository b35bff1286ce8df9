//! Types and constants every OpenLedger crate agrees on.
//!
//! The chain speaks Ethereum's vocabulary (20-byte addresses, 32-byte words, wei-denominated
//! amounts), so this crate re-exports `alloy-primitives` rather than wrapping it: a wallet, an
//! RPC client and the executor all see the same `Address`. What it adds is the protocol's own
//! fixed points — where the precompiles live, where the treasury is, how OPEN is denominated.

pub mod addresses;
pub mod units;

pub use alloy_primitives::{Address, B256, Bytes, U256, address, b256, keccak256};

/// Chain id of a devnet started by `openledger up` unless told otherwise.
pub const DEFAULT_CHAIN_ID: u64 = 1612;
