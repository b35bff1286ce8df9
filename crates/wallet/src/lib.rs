//! Everything `openledger wallet …` needs that is not argument parsing.
//!
//! - [`keystore`]: accounts kept as standard Ethereum keystore v3 files (geth, foundry and
//!   MetaMask exports read the same format), one file per account name.
//! - [`rpc`]: a small blocking JSON-RPC 2.0 client for talking to a node over plain HTTP.
//! - [`transfer`]: building and sending signed EIP-1559 value transfers.
//! - [`units`]: reading and writing OPEN amounts (18 decimals).
//!
//! The library never prints; every failure is a typed error whose message says what was
//! wrong, where, and what to do about it.

pub mod keystore;
pub mod rpc;
pub mod transfer;

pub use alloy_signer_local::PrivateKeySigner;
pub use keystore::{Keystore, KeystoreError};
pub use openledger_primitives::units::{self, UnitsError, format_open, parse_open};
pub use rpc::{RpcClient, RpcError};
pub use transfer::{
    SignedTransfer, TRANSFER_GAS_LIMIT, Transfer, TransferError, build_transfer, send_call,
    send_value,
};
