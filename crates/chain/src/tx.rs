//! Decoding and stateless checks of signed transactions, and their conversion to revm's input.
//!
//! Error texts follow geth's wording because wallets and libraries pattern-match on them
//! ("nonce too low", "insufficient funds for gas * price + value", …).

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718, Typed2718};
use openledger_primitives::{Address, B256, U256};
use revm::context::TxEnv;
use revm::context_interface::cfg::gas::calculate_initial_tx_gas_for_tx;
use revm::primitives::hardfork::SpecId;

/// A transaction whose signature has been checked and whose sender is known.
#[derive(Debug, Clone)]
pub struct RecoveredTx {
    pub envelope: TxEnvelope,
    pub sender: Address,
    pub hash: B256,
}

/// Why a transaction is refused. Each message is the one geth gives for the same fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("rlp: {0}")]
    Decode(String),
    #[error("oversized data: transaction size {size}, limit {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("transaction type not supported")]
    UnsupportedType,
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    NotReplayProtected,
    #[error("invalid chain id for signer: have {have} want {want}")]
    WrongChainId { have: u64, want: u64 },
    #[error("invalid sender: {0}")]
    InvalidSignature(String),
    #[error("nonce too low: next nonce {next}, tx nonce {tx} (address {address})")]
    NonceTooLow {
        address: Address,
        tx: u64,
        next: u64,
    },
    #[error("nonce too high: next nonce {next}, tx nonce {tx} (address {address})")]
    NonceTooHigh {
        address: Address,
        tx: u64,
        next: u64,
    },
    #[error(
        "insufficient funds for gas * price + value: address {address} have {have} want {want}"
    )]
    InsufficientFunds {
        address: Address,
        have: U256,
        want: U256,
    },
    #[error("exceeds block gas limit")]
    GasLimitExceeded,
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGasTooLow { gas: u64, needed: u64 },
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    #[error(
        "max fee per gas less than block base fee: address {address}, maxFeePerGas: {max_fee}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        address: Address,
        max_fee: u128,
        base_fee: u64,
    },
    #[error("max initcode size exceeded: code size {size}, limit {limit}")]
    InitcodeTooLarge { size: usize, limit: usize },
    #[error("already known")]
    AlreadyKnown,
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    #[error("txpool is full")]
    PoolFull,
    /// Not the transaction's fault: the node could not read its own state.
    #[error("node state unavailable: {0}")]
    StateUnavailable(String),
}

/// Largest init code accepted (EIP-3860).
pub const MAX_INITCODE_SIZE: usize = 2 * 24_576;

impl RecoveredTx {
    /// Decodes an EIP-2718 encoded transaction (legacy RLP or typed) and recovers its sender.
    pub fn decode(raw: &[u8], chain_id: u64, max_bytes: usize) -> Result<Self, TxError> {
        if raw.len() > max_bytes {
            return Err(TxError::Oversized {
                size: raw.len(),
                limit: max_bytes,
            });
        }
        let mut buf = raw;
        let envelope =
            TxEnvelope::decode_2718(&mut buf).map_err(|e| TxError::Decode(e.to_string()))?;
        if !buf.is_empty() {
            return Err(TxError::Decode(format!(
                "{} trailing bytes after transaction",
                buf.len()
            )));
        }
        Self::from_envelope(envelope, chain_id)
    }

    /// Checks the chain id and signature of an already decoded transaction.
    pub fn from_envelope(envelope: TxEnvelope, chain_id: u64) -> Result<Self, TxError> {
        match &envelope {
            TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) | TxEnvelope::Eip1559(_) => {}
            // Blob transactions need a blob sidecar network and 7702 delegations need audit of
            // the precompile modules' caller checks; neither is supported yet.
            TxEnvelope::Eip4844(_) | TxEnvelope::Eip7702(_) => {
                return Err(TxError::UnsupportedType);
            }
        }
        match envelope.chain_id() {
            None => return Err(TxError::NotReplayProtected),
            Some(have) if have != chain_id => {
                return Err(TxError::WrongChainId {
                    have,
                    want: chain_id,
                });
            }
            Some(_) => {}
        }
        let sender = envelope
            .recover_signer()
            .map_err(|e| TxError::InvalidSignature(e.to_string()))?;
        let hash = *envelope.tx_hash();
        Ok(Self {
            envelope,
            sender,
            hash,
        })
    }

    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }

    pub fn max_fee_per_gas(&self) -> u128 {
        self.envelope.max_fee_per_gas()
    }

    pub fn encoded(&self) -> Vec<u8> {
        self.envelope.encoded_2718()
    }

    /// The most this transaction can cost its sender: gas limit × fee cap + value.
    pub fn max_cost(&self) -> U256 {
        U256::from(self.gas_limit()) * U256::from(self.max_fee_per_gas()) + self.envelope.value()
    }

    /// Checks that need no state: fee fields, intrinsic gas, init code size, block gas limit.
    pub fn check_static(&self, spec: SpecId, block_gas_limit: u64) -> Result<(), TxError> {
        let env = self.to_tx_env();
        if let Some(tip) = self.envelope.max_priority_fee_per_gas()
            && tip > self.envelope.max_fee_per_gas()
        {
            return Err(TxError::TipAboveFeeCap);
        }
        if self.gas_limit() > block_gas_limit {
            return Err(TxError::GasLimitExceeded);
        }
        if self.envelope.is_create() && self.envelope.input().len() > MAX_INITCODE_SIZE {
            return Err(TxError::InitcodeTooLarge {
                size: self.envelope.input().len(),
                limit: MAX_INITCODE_SIZE,
            });
        }
        let initial = calculate_initial_tx_gas_for_tx(&env, spec, None);
        let needed =
            (initial.initial_regular_gas + initial.initial_state_gas).max(initial.floor_gas);
        if self.gas_limit() < needed {
            return Err(TxError::IntrinsicGasTooLow {
                gas: self.gas_limit(),
                needed,
            });
        }
        Ok(())
    }

    /// revm's view of the transaction.
    pub fn to_tx_env(&self) -> TxEnv {
        let tx = &self.envelope;
        TxEnv {
            tx_type: tx.ty(),
            caller: self.sender,
            gas_limit: tx.gas_limit(),
            gas_price: tx.max_fee_per_gas(),
            kind: tx.kind(),
            value: tx.value(),
            data: tx.input().clone(),
            nonce: tx.nonce(),
            chain_id: tx.chain_id(),
            access_list: tx.access_list().cloned().unwrap_or_default(),
            gas_priority_fee: tx.max_priority_fee_per_gas().filter(|_| tx.ty() >= 2),
            ..TxEnv::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
    use alloy_primitives::{Bytes, TxKind};
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;
    use proptest::prelude::*;

    fn signer() -> PrivateKeySigner {
        crate::test_utils::key(0)
    }

    fn signed_1559(chain_id: u64, nonce: u64) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(Address::repeat_byte(7)),
            value: U256::from(5),
            access_list: Default::default(),
            input: Bytes::new(),
        };
        let sig = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    #[test]
    fn decodes_a_signed_eip1559_transfer_and_recovers_the_sender() {
        let tx = RecoveredTx::decode(&signed_1559(1612, 3), 1612, 128 * 1024).unwrap();
        assert_eq!(tx.sender, signer().address());
        assert_eq!(tx.nonce(), 3);
        assert_eq!(tx.max_cost(), U256::from(21_000u64 * 2_000_000_000 + 5));
    }

    #[test]
    fn refuses_another_chains_transaction() {
        let err = RecoveredTx::decode(&signed_1559(1, 0), 1612, 128 * 1024).unwrap_err();
        assert_eq!(
            err,
            TxError::WrongChainId {
                have: 1,
                want: 1612
            }
        );
        assert!(err.to_string().starts_with("invalid chain id for signer"));
    }

    #[test]
    fn refuses_legacy_transactions_without_eip155() {
        let tx = TxLegacy {
            chain_id: None,
            gas_limit: 21_000,
            gas_price: 1,
            ..Default::default()
        };
        let sig = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
        let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
        assert_eq!(
            RecoveredTx::decode(&raw, 1612, 1 << 17).unwrap_err(),
            TxError::NotReplayProtected
        );
    }

    #[test]
    fn refuses_oversized_and_trailing_bytes() {
        let mut raw = signed_1559(1612, 0);
        assert!(matches!(
            RecoveredTx::decode(&raw, 1612, 10),
            Err(TxError::Oversized { .. })
        ));
        raw.push(0);
        assert!(matches!(
            RecoveredTx::decode(&raw, 1612, 1 << 17),
            Err(TxError::Decode(_))
        ));
    }

    #[test]
    fn a_tampered_signature_changes_the_sender_or_fails() {
        let mut raw = signed_1559(1612, 0);
        let n = raw.len();
        raw[n - 5] ^= 0xff;
        match RecoveredTx::decode(&raw, 1612, 1 << 17) {
            Ok(tx) => assert_ne!(tx.sender, signer().address()),
            Err(e) => assert!(matches!(
                e,
                TxError::InvalidSignature(_) | TxError::Decode(_)
            )),
        }
    }

    #[test]
    fn intrinsic_gas_and_block_limit_are_checked() {
        let tx = RecoveredTx::decode(&signed_1559(1612, 0), 1612, 1 << 17).unwrap();
        tx.check_static(SpecId::PRAGUE, 30_000_000).unwrap();
        assert_eq!(
            tx.check_static(SpecId::PRAGUE, 20_000),
            Err(TxError::GasLimitExceeded)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = RecoveredTx::decode(&bytes, 1612, 1 << 17);
        }

        #[test]
        fn decoding_mutated_valid_transactions_never_panics(pos in 0usize..120, byte in any::<u8>()) {
            let mut raw = signed_1559(1612, 0);
            let i = pos % raw.len();
            raw[i] = byte;
            let _ = RecoveredTx::decode(&raw, 1612, 1 << 17);
        }
    }
}
