//! Signed transactions and a funded genesis for tests.

use crate::genesis::Genesis;
use crate::state::MemoryState;
use crate::tx::RecoveredTx;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::TxKind;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_primitives::{Address, Bytes, U256, units::ONE_OPEN};

pub const CHAIN_ID: u64 = 1612;

/// Dev key `i` (deterministic, not the public mnemonic).
pub fn key(i: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&[i + 1; 32].into()).expect("valid key")
}

/// An EIP-1559 transaction from `signer`, encoded for the wire.
pub fn signed(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
) -> Vec<u8> {
    signed_with_fee(signer, nonce, to, value, input, gas, 10_000_000_000)
}

/// Like [`signed`] with a chosen fee cap (the tip stays 1 gwei).
pub fn signed_with_fee(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
    max_fee_per_gas: u128,
) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas,
        max_priority_fee_per_gas: 1_000_000_000,
        to,
        value,
        access_list: Default::default(),
        input,
    };
    let sig = signer
        .sign_hash_sync(&tx.signature_hash())
        .expect("signing works");
    TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
}

pub fn recovered(raw: &[u8]) -> RecoveredTx {
    RecoveredTx::decode(raw, CHAIN_ID, 1 << 17).expect("valid test transaction")
}

pub fn transfer(signer: &PrivateKeySigner, nonce: u64, to: Address, value: U256) -> RecoveredTx {
    recovered(&signed(
        signer,
        nonce,
        TxKind::Call(to),
        value,
        Bytes::new(),
        21_000,
    ))
}

/// Keys 0..n funded with 100 OPEN each.
pub fn funded(n: u8) -> (Genesis, MemoryState) {
    let genesis = Genesis {
        alloc: (0..n)
            .map(|i| (key(i).address(), ONE_OPEN * U256::from(100)))
            .collect(),
        ..Default::default()
    };
    let mut state = MemoryState::default();
    state.apply(&genesis.state());
    (genesis, state)
}
