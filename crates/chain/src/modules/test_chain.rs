//! A chain in memory for module tests: signed calls through the real block executor, views
//! through `call`.

use crate::executor::{BlockContext, ExecutedTx, call, execute_block};
use crate::genesis::Genesis;
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
    /// The number of the block the next call runs in.
    pub number: u64,
    /// The module the calls go to.
    pub to: Address,
}

impl Chain {
    pub fn new(to: Address) -> Self {
        Self::from_state(to, funded(5).1)
    }

    /// A chain starting from `genesis`.
    pub fn with_genesis(to: Address, genesis: &Genesis) -> Self {
        let mut state = MemoryState::default();
        state.apply(&genesis.state());
        Self::from_state(to, state)
    }

    fn from_state(to: Address, state: MemoryState) -> Self {
        Self {
            to,
            state,
            nonces: Default::default(),
            timestamp: 1_000,
            number: 1,
        }
    }

    /// Moves on `blocks` blocks (the next call runs in a later block).
    pub fn advance(&mut self, blocks: u64) {
        self.number += blocks;
        self.timestamp += 12 * blocks;
    }

    /// The OPEN balance of `who`.
    pub fn balance(&self, who: Address) -> U256 {
        use crate::state::StateView;
        self.state
            .account(who)
            .unwrap()
            .map_or(U256::ZERO, |a| a.balance)
    }

    pub fn ctx(&self) -> BlockContext {
        BlockContext {
            number: self.number,
            timestamp: self.timestamp,
            beneficiary: Address::repeat_byte(0xbe),
            base_fee: 1,
            gas_limit: 30_000_000,
            prevrandao: B256::ZERO,
        }
    }

    pub fn send(&mut self, from: &PrivateKeySigner, data: Vec<u8>, value: U256) -> ExecutedTx {
        self.send_to(self.to, from, data, value)
    }

    /// Sends a call to another module than [`Self::to`].
    pub fn send_to(
        &mut self,
        to: Address,
        from: &PrivateKeySigner,
        data: Vec<u8>,
        value: U256,
    ) -> ExecutedTx {
        let nonce = self.nonces.entry(from.address()).or_default();
        let tx = recovered(&signed(
            from,
            *nonce,
            TxKind::Call(to),
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
        self.view_to(self.to, data)
    }

    /// A view call to another module than [`Self::to`].
    pub fn view_to(&self, to: Address, data: Vec<u8>) -> Bytes {
        let tx = TxEnv {
            kind: TxKind::Call(to),
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
