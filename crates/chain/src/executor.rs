//! Executes an ordered list of transactions on top of a parent state.
//!
//! The executor does not care who ordered the transactions: the Solo sequencer and a BFT engine
//! hand it the same inputs and get the same block. Transactions that turn out invalid against
//! the state at their position (a nonce already used, funds spent by an earlier transaction) are
//! left out of the block and reported, as a block builder does; they cost nothing.

use crate::modules::OpenLedgerPrecompiles;
use crate::spec::ChainSpec;
use crate::state::{BlockState, StateDiff, StateError, StateView};
use crate::tx::RecoveredTx;
use alloy_consensus::Transaction;
use openledger_primitives::{Address, B256, Bytes, U256};
use revm::context::result::{EVMError, ExecutionResult, InvalidTransaction};
use revm::context::{BlockEnv, Context};
use revm::handler::{ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use revm::primitives::Log;

/// Everything about the block being built that is not a transaction.
#[derive(Debug, Clone)]
pub struct BlockContext {
    pub number: u64,
    pub timestamp: u64,
    pub beneficiary: Address,
    pub base_fee: u64,
    pub gas_limit: u64,
    pub prevrandao: B256,
}

/// The outcome of one included transaction.
#[derive(Debug, Clone)]
pub struct ExecutedTx {
    pub tx: RecoveredTx,
    pub success: bool,
    pub gas_used: u64,
    pub cumulative_gas_used: u64,
    pub logs: Vec<Log>,
    pub contract_address: Option<Address>,
    pub effective_gas_price: u128,
    /// Return data, or the revert payload of a failed call.
    pub output: Bytes,
}

/// A transaction left out of the block, and why.
#[derive(Debug, Clone)]
pub struct SkippedTx {
    pub tx: RecoveredTx,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    pub txs: Vec<ExecutedTx>,
    pub skipped: Vec<SkippedTx>,
    pub gas_used: u64,
    /// Base fees paid by the block's transactions, credited to the treasury.
    pub treasury_fees: U256,
    pub diff: StateDiff,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("EVM failed: {0}")]
    Evm(String),
}

/// Outcome of a call that is not part of any block (`eth_call`, `eth_estimateGas`).
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub success: bool,
    pub gas_used: u64,
    pub output: Bytes,
    /// `Some(reason)` when the EVM halted (out of gas, invalid opcode…), as opposed to a revert.
    pub halt: Option<String>,
}

/// Why a call could not even run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Invalid(String),
}

fn block_env(ctx: &BlockContext) -> BlockEnv {
    BlockEnv {
        number: U256::from(ctx.number),
        beneficiary: ctx.beneficiary,
        timestamp: U256::from(ctx.timestamp),
        gas_limit: ctx.gas_limit,
        basefee: ctx.base_fee,
        difficulty: U256::ZERO,
        prevrandao: Some(ctx.prevrandao),
        ..BlockEnv::default()
    }
}

/// Executes `txs` in order on `view` and returns the block's receipts and state diff.
pub fn execute_block<V: StateView>(
    spec: &ChainSpec,
    view: V,
    ctx: &BlockContext,
    txs: Vec<RecoveredTx>,
) -> Result<ExecutedBlock, ExecError> {
    let mut state = BlockState::new(view);
    let mut included = Vec::with_capacity(txs.len());
    let mut skipped = Vec::new();
    let mut cumulative = 0u64;
    let mut treasury_fees = U256::ZERO;
    {
        let mut evm = Context::mainnet()
            .with_db(&mut state)
            .modify_cfg_chained(|c| {
                c.chain_id = spec.chain_id;
                c.spec = spec.hardfork;
            })
            .with_block(block_env(ctx))
            .build_mainnet()
            .with_precompiles(OpenLedgerPrecompiles::new(spec.hardfork));
        for tx in txs {
            if cumulative + tx.gas_limit() > ctx.gas_limit {
                skipped.push(SkippedTx {
                    tx,
                    reason: "exceeds remaining block gas".into(),
                });
                continue;
            }
            let result = match evm.transact_commit(tx.to_tx_env()) {
                Ok(result) => result,
                Err(EVMError::Transaction(invalid)) => {
                    skipped.push(SkippedTx {
                        tx,
                        reason: invalid.to_string(),
                    });
                    continue;
                }
                Err(EVMError::Database(e)) => return Err(ExecError::State(e)),
                Err(e) => return Err(ExecError::Evm(e.to_string())),
            };
            let gas_used = result.tx_gas_used();
            cumulative += gas_used;
            treasury_fees += U256::from(gas_used) * U256::from(ctx.base_fee);
            let contract_address = tx
                .envelope
                .is_create()
                .then(|| tx.sender.create(tx.envelope.nonce()));
            let effective_gas_price = tx.envelope.effective_gas_price(Some(ctx.base_fee));
            let (success, output) = match &result {
                ExecutionResult::Success { output, .. } => (true, output.data().clone()),
                ExecutionResult::Revert { output, .. } => (false, output.clone()),
                ExecutionResult::Halt { .. } => (false, Bytes::new()),
            };
            included.push(ExecutedTx {
                logs: result.logs().to_vec(),
                tx,
                success,
                gas_used,
                cumulative_gas_used: cumulative,
                contract_address,
                effective_gas_price,
                output,
            });
        }
    }
    // Ethereum burns the base fee; OpenLedger pays it to the treasury, once per block.
    state.credit(spec.treasury, treasury_fees)?;
    Ok(ExecutedBlock {
        txs: included,
        skipped,
        gas_used: cumulative,
        treasury_fees,
        diff: state.into_diff(),
    })
}

/// Runs a call against `view` without keeping any change.
///
/// Balance and nonce checks are off, as in geth's `eth_call`, so a caller without funds can still
/// read; a zero gas price means no fee is charged.
pub fn call<V: StateView>(
    spec: &ChainSpec,
    view: V,
    ctx: &BlockContext,
    tx: revm::context::TxEnv,
) -> Result<CallOutcome, CallError> {
    let mut state = BlockState::new(view);
    let mut evm = Context::mainnet()
        .with_db(&mut state)
        .modify_cfg_chained(|c| {
            c.chain_id = spec.chain_id;
            c.spec = spec.hardfork;
            c.disable_nonce_check = true;
            c.disable_balance_check = true;
            c.disable_base_fee = true;
        })
        .with_block(block_env(ctx))
        .build_mainnet()
        .with_precompiles(OpenLedgerPrecompiles::new(spec.hardfork));
    let result = match evm.transact(tx) {
        Ok(r) => r.result,
        Err(EVMError::Database(e)) => return Err(CallError::State(e)),
        Err(EVMError::Transaction(e)) => return Err(CallError::Invalid(invalid_message(&e))),
        Err(e) => return Err(CallError::Invalid(e.to_string())),
    };
    let gas_used = result.tx_gas_used();
    Ok(match result {
        ExecutionResult::Success { output, .. } => CallOutcome {
            success: true,
            gas_used,
            output: output.data().clone(),
            halt: None,
        },
        ExecutionResult::Revert { output, .. } => CallOutcome {
            success: false,
            gas_used,
            output,
            halt: None,
        },
        ExecutionResult::Halt { reason, .. } => CallOutcome {
            success: false,
            gas_used,
            output: Bytes::new(),
            halt: Some(format!("{reason:?}")),
        },
    })
}

fn invalid_message(e: &InvalidTransaction) -> String {
    match e {
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. } => "intrinsic gas too low".into(),
        other => other.to_string(),
    }
}
