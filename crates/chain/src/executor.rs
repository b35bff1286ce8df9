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
use alloy_sol_types::SolCall;
use openledger_primitives::addresses::{GOVERNANCE, STAKING, SYSTEM};
use openledger_primitives::{Address, B256, Bytes, U256};
use revm::context::result::{EVMError, ExecutionResult, InvalidTransaction};
use revm::context::{BlockEnv, Context};
use revm::handler::{ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext, SystemCallCommitEvm};
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
    /// The transaction may still be valid in a later block (it only lacked room in this one);
    /// otherwise it can never run as it is and should be dropped.
    pub retry: bool,
}

#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    pub txs: Vec<ExecutedTx>,
    pub skipped: Vec<SkippedTx>,
    pub gas_used: u64,
    /// Base fees paid by the block's transactions: the stakers' share (`staking.block_fee_share_bps`)
    /// goes to the Staking module, the rest to the treasury.
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
    let staker_fees;
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
        // Block-start hook: governance executes the proposals whose timelock ended, so what
        // they change holds for every transaction of this block. It handles its own failures;
        // a revert here would be a bug in the module, and the block goes on without it.
        let ready = crate::modules::governance::IGovernance::executeReadyCall {}.abi_encode();
        match evm.system_call_with_caller_commit(SYSTEM, GOVERNANCE, ready.into()) {
            Ok(_) => {}
            Err(EVMError::Database(e)) => return Err(ExecError::State(e)),
            Err(e) => return Err(ExecError::Evm(format!("governance block hook: {e}"))),
        }
        for tx in txs {
            if cumulative + tx.gas_limit() > ctx.gas_limit {
                skipped.push(SkippedTx {
                    tx,
                    reason: "exceeds remaining block gas".into(),
                    retry: true,
                });
                continue;
            }
            let result = match evm.transact_commit(tx.to_tx_env()) {
                Ok(result) => result,
                Err(EVMError::Transaction(invalid)) => {
                    skipped.push(SkippedTx {
                        tx,
                        reason: invalid.to_string(),
                        retry: false,
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
        // Block-end hook: Staking accrues its share of the block's base fees to the stakers.
        let accrue = crate::modules::staking::IStaking::accrueBlockRewardsCall {
            blockFees: treasury_fees,
        }
        .abi_encode();
        staker_fees = match evm.system_call_with_caller_commit(SYSTEM, STAKING, accrue.into()) {
            Ok(ExecutionResult::Success { output, .. }) if output.data().len() == 32 => {
                U256::from_be_slice(output.data()).min(treasury_fees)
            }
            Ok(_) => U256::ZERO,
            Err(EVMError::Database(e)) => return Err(ExecError::State(e)),
            Err(e) => return Err(ExecError::Evm(format!("staking block hook: {e}"))),
        };
    }
    // Ethereum burns the base fee; OpenLedger pays it to the stakers (the share the Staking
    // module accrued above) and the treasury, once per block.
    state.credit(STAKING, staker_fees)?;
    state.credit(spec.treasury, treasury_fees - staker_fees)?;
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
    mut tx: revm::context::TxEnv,
) -> Result<CallOutcome, CallError> {
    // A call is never signed, so its chain id is this chain's.
    tx.chain_id = Some(spec.chain_id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::protocol_params::{BLOCK_GAS_LIMIT, IProtocolParams};
    use crate::test_utils::{CHAIN_ID, funded, key, recovered, signed, transfer};
    use alloy_primitives::{TxKind, hex};
    use alloy_sol_types::{SolCall, SolError};
    use openledger_primitives::addresses::{GOVERNANCE, PROTOCOL_PARAMS, TREASURY};
    use revm::context::TxEnv;

    const BENEFICIARY: Address = Address::repeat_byte(0xbe);
    /// Runtime: `sstore(0, calldataload(0)); log0(0, 0)`, behind init code that returns it.
    const STORE_AND_LOG: &str = "600c600c600039600c6000f360003560005560006000a000";

    fn spec() -> ChainSpec {
        ChainSpec::devnet(CHAIN_ID)
    }

    fn ctx(base_fee: u64) -> BlockContext {
        BlockContext {
            number: 1,
            timestamp: 1_700_000_000,
            beneficiary: BENEFICIARY,
            base_fee,
            gas_limit: 30_000_000,
            prevrandao: B256::ZERO,
        }
    }

    fn balance(diff: &StateDiff, who: Address) -> U256 {
        diff.accounts[&who]
            .account
            .map(|a| a.balance)
            .unwrap_or_default()
    }

    #[test]
    fn transfer_pays_tip_to_beneficiary_and_base_fee_to_treasury() {
        let (_, state) = funded(1);
        let sender = key(0);
        let to = Address::repeat_byte(0x42);
        let before = state.accounts[&sender.address()].balance;
        let block = execute_block(
            &spec(),
            &state,
            &ctx(1_000_000_000),
            vec![transfer(&sender, 0, to, U256::from(5))],
        )
        .unwrap();
        assert_eq!(block.txs.len(), 1);
        assert!(block.txs[0].success);
        assert_eq!(block.gas_used, 21_000);
        let base = U256::from(21_000u64 * 1_000_000_000);
        let tip = U256::from(21_000u64 * 1_000_000_000);
        assert_eq!(balance(&block.diff, to), U256::from(5));
        assert_eq!(balance(&block.diff, TREASURY), base);
        assert_eq!(balance(&block.diff, BENEFICIARY), tip);
        assert_eq!(
            balance(&block.diff, sender.address()),
            before - U256::from(5) - base - tip
        );
        assert_eq!(
            block.diff.accounts[&sender.address()]
                .account
                .unwrap()
                .nonce,
            1
        );
    }

    #[test]
    fn deployed_contract_keeps_storage_and_emits_logs() {
        let (_, mut state) = funded(1);
        let deployer = key(0);
        let deploy = recovered(&signed(
            &deployer,
            0,
            TxKind::Create,
            U256::ZERO,
            hex::decode(STORE_AND_LOG).unwrap().into(),
            200_000,
        ));
        let block = execute_block(&spec(), &state, &ctx(1), vec![deploy]).unwrap();
        let contract = block.txs[0]
            .contract_address
            .expect("a create has an address");
        assert_eq!(contract, deployer.address().create(0));
        assert!(block.txs[0].success);
        state.apply(&block.diff);

        let value = B256::with_last_byte(7);
        let call = recovered(&signed(
            &deployer,
            1,
            TxKind::Call(contract),
            U256::ZERO,
            value.0.to_vec().into(),
            100_000,
        ));
        let block = execute_block(&spec(), &state, &ctx(1), vec![call]).unwrap();
        assert!(block.txs[0].success);
        assert_eq!(block.txs[0].logs.len(), 1);
        assert_eq!(block.txs[0].logs[0].address, contract);
        assert_eq!(
            block.diff.accounts[&contract].storage[&U256::ZERO],
            U256::from(7)
        );
    }

    #[test]
    fn transactions_invalid_at_their_position_are_left_out() {
        let (_, state) = funded(1);
        let sender = key(0);
        let to = Address::repeat_byte(1);
        let txs = vec![
            transfer(&sender, 0, to, U256::from(1)),
            transfer(&sender, 0, to, U256::from(2)),
            transfer(&sender, 5, to, U256::from(3)),
        ];
        let block = execute_block(&spec(), &state, &ctx(1), txs).unwrap();
        assert_eq!(block.txs.len(), 1);
        assert_eq!(block.skipped.len(), 2);
        assert_eq!(balance(&block.diff, to), U256::from(1));
    }

    #[test]
    fn protocol_params_answers_reads_with_genesis_values() {
        let (_, state) = funded(0);
        let input = IProtocolParams::getCall {
            name: BLOCK_GAS_LIMIT.into(),
        }
        .abi_encode();
        let tx = TxEnv {
            kind: TxKind::Call(PROTOCOL_PARAMS),
            data: input.into(),
            gas_limit: 100_000,
            ..TxEnv::default()
        };
        let out = call(&spec(), &state, &ctx(0), tx).unwrap();
        assert!(out.success, "{out:?}");
        assert_eq!(U256::from_be_slice(&out.output), U256::from(30_000_000));

        let unknown = IProtocolParams::getCall {
            name: "no.such.param".into(),
        }
        .abi_encode();
        let tx = TxEnv {
            kind: TxKind::Call(PROTOCOL_PARAMS),
            data: unknown.into(),
            gas_limit: 100_000,
            ..TxEnv::default()
        };
        let out = call(&spec(), &state, &ctx(0), tx).unwrap();
        assert!(!out.success);
        let err = IProtocolParams::UnknownParam::abi_decode(&out.output).unwrap();
        assert_eq!(err.name, "no.such.param");
    }

    #[test]
    fn only_governance_may_change_a_protocol_parameter() {
        let (_, state) = funded(1);
        let set = IProtocolParams::setCall {
            name: BLOCK_GAS_LIMIT.into(),
            value: U256::from(40_000_000),
        }
        .abi_encode();
        let attempt = recovered(&signed(
            &key(0),
            0,
            TxKind::Call(PROTOCOL_PARAMS),
            U256::ZERO,
            set.clone().into(),
            100_000,
        ));
        let block = execute_block(&spec(), &state, &ctx(1), vec![attempt]).unwrap();
        assert!(!block.txs[0].success, "a user must not set parameters");
        IProtocolParams::NotGovernance::abi_decode(&block.txs[0].output).unwrap();
        assert!(
            block
                .diff
                .accounts
                .get(&PROTOCOL_PARAMS)
                .is_none_or(|d| d.storage.is_empty())
        );

        let as_governance = |data: Vec<u8>| TxEnv {
            caller: GOVERNANCE,
            kind: TxKind::Call(PROTOCOL_PARAMS),
            data: data.into(),
            gas_limit: 200_000,
            ..TxEnv::default()
        };
        let out = call(&spec(), &state, &ctx(0), as_governance(set)).unwrap();
        assert!(out.success, "{out:?}");
        let too_big = IProtocolParams::setCall {
            name: BLOCK_GAS_LIMIT.into(),
            value: U256::MAX,
        }
        .abi_encode();
        let out = call(&spec(), &state, &ctx(0), as_governance(too_big)).unwrap();
        IProtocolParams::OutOfBounds::abi_decode(&out.output).unwrap();
    }

    #[test]
    fn module_calls_pay_gas_and_fail_cleanly_when_it_runs_out() {
        let (_, state) = funded(0);
        let input = IProtocolParams::allCall {}.abi_encode();
        let tx = |gas| TxEnv {
            kind: TxKind::Call(PROTOCOL_PARAMS),
            data: input.clone().into(),
            gas_limit: gas,
            ..TxEnv::default()
        };
        let ok = call(&spec(), &state, &ctx(0), tx(1_000_000)).unwrap();
        assert!(ok.success);
        assert!(
            ok.gas_used > 21_000 + 14 * 2_100,
            "each parameter read is a cold sload"
        );
        let starved = call(&spec(), &state, &ctx(0), tx(30_000)).unwrap();
        assert!(!starved.success);
        assert_eq!(
            starved.gas_used, 30_000,
            "an out-of-gas halt consumes the whole limit"
        );
    }
}
