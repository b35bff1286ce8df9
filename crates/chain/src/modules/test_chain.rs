//! A chain in memory for module tests: signed calls through the real block executor, views
//! through `call`.

use crate::executor::{BlockContext, ExecutedTx, call, execute_block};
use crate::spec::ChainSpec;
use crate::state::MemoryState;
use crate::test_utils::{CHAIN_ID, funded, recovered, signed};
use alloy_primitives::TxKind;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolError;
use openledger_primitives::{Address, B256, Bytes, U256};
use revm::context::TxEnv;

pub struct Chain {
    pub state: MemoryState,
    nonces: std::collections::HashMap<Address, u64>,
    pub timestamp: u64,
    /// The module the calls go to.
    pub to: Address,
}

impl Chain {
    pub fn new(to: Address) -> Self {
        Self {
            to,
            state: funded(5).1,
            nonces: Default::default(),
            timestamp: 1_000,
        }
    }

    pub fn ctx(&self) -> BlockContext {
        BlockContext {
            number: 1,
            timestamp: self.timestamp,
            beneficiary: Address::repeat_byte(0xbe),
            base_fee: 1,
            gas_limit: 30_000_000,
            prevrandao: B256::ZERO,
        }
    }

    pub fn send(&mut self, from: &PrivateKeySigner, data: Vec<u8>, value: U256) -> ExecutedTx {
        let nonce = self.nonces.entry(from.address()).or_default();
        let tx = recovered(&signed(
            from,
            *nonce,
            TxKind::Call(self.to),
            value,
            data.into(),
            1_000_000,
        ));
        *nonce += 1;
        let block = execute_block(
            &ChainSpec::devnet(CHAIN_ID),
            &self.state,
            &self.ctx(),
            vec![tx],
        )
        .unwrap();
        self.state.apply(&block.diff);
        block.txs.into_iter().next().expect("included")
    }

    pub fn view(&self, data: Vec<u8>) -> Bytes {
        let tx = TxEnv {
            kind: TxKind::Call(self.to),
            data: data.into(),
            gas_limit: 1_000_000,
            ..TxEnv::default()
        };
        let out = call(&ChainSpec::devnet(CHAIN_ID), &self.state, &self.ctx(), tx).unwrap();
        assert!(out.success, "view reverted: {:?}", out.output);
        out.output
    }
}

/// The revert data of a failed call, decoded as `E`.
pub fn reverted_with<E: SolError>(tx: &ExecutedTx) -> E {
    assert!(!tx.success, "expected a revert");
    E::abi_decode(&tx.output)
        .unwrap_or_else(|_| panic!("revert data {:?} is not {}", tx.output, E::SIGNATURE))
}
