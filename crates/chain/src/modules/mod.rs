//! OpenLedger's protocol modules, run by the EVM as stateful precompiles.
//!
//! A module is plain Rust behind a Solidity interface: it decodes ABI calldata, reads and writes
//! EVM storage of its own address through revm's journal (so a revert anywhere in the call tree
//! undoes its writes and the state root covers its state) and pays for what it does in gas, like
//! a contract would. [`OpenLedgerPrecompiles`] installs every module next to Ethereum's own
//! precompiles; adding a module is one entry in [`modules`].

pub mod datanets;
pub mod governance;
pub mod inference;
pub mod models;
pub mod protocol_params;
pub mod settlement;
pub mod staking;
pub mod storage;
#[cfg(test)]
mod test_chain;

use alloy_sol_types::SolError;
use openledger_primitives::addresses::{GOVERNANCE, TREASURY};
use openledger_primitives::{Address, B256, Bytes, U256};
use revm::context::Cfg;
use revm::context_interface::{Block, ContextTr, JournalTr};
use revm::handler::{EthPrecompiles, PrecompileProvider};
use revm::interpreter::{CallInputs, Gas, InstructionResult, InterpreterResult};
use revm::primitives::{AddressSet, Log, hardfork::SpecId};
use std::sync::Arc;

pub use datanets::Datanets;
pub use governance::Governance;
pub use inference::Inference;
pub use models::Models;
pub use protocol_params::ProtocolParams;
pub use settlement::Settlement;
pub use staking::Staking;

/// Gas every module call pays before doing anything (like a contract call's overhead).
pub const CALL_BASE_GAS: u64 = 700;
const COLD_SLOAD_GAS: u64 = 2_100;
const WARM_READ_GAS: u64 = 100;
const SSTORE_SET_GAS: u64 = 20_000;
const SSTORE_RESET_GAS: u64 = 2_900;
const LOG_GAS: u64 = 375;
const LOG_TOPIC_GAS: u64 = 375;
const LOG_DATA_GAS: u64 = 8;
const TRANSFER_GAS: u64 = 9_000;

/// Why a module call did not succeed.
#[derive(Debug)]
pub enum ModuleError {
    /// The call reverts with this ABI-encoded payload (a Solidity custom error or `Error(string)`).
    Revert(Bytes),
    /// Gas ran out: the call halts and consumes its gas.
    OutOfGas,
    /// Storage failed underneath: the whole block execution aborts.
    Fatal(String),
}

impl ModuleError {
    /// Reverts with a Solidity custom error.
    pub fn revert<E: SolError>(error: E) -> Self {
        Self::Revert(error.abi_encode().into())
    }

    /// Reverts with `Error(string)`, which every client decodes as a reason.
    pub fn reason(message: impl Into<String>) -> Self {
        Self::Revert(
            alloy_sol_types::Revert::from(message.into())
                .abi_encode()
                .into(),
        )
    }
}

/// What a module sees of the call that reached it.
pub struct CallContext<'a> {
    pub caller: Address,
    pub value: U256,
    pub is_static: bool,
    pub input: &'a [u8],
    pub block_number: u64,
    pub block_timestamp: u64,
}

/// A module's access to its own storage and to logs, metered in gas.
pub trait ModuleHost {
    fn sload(&mut self, slot: U256) -> Result<U256, ModuleError>;
    /// Reads another account's storage (e.g. a parameter of `ProtocolParams`).
    fn sload_at(&mut self, address: Address, slot: U256) -> Result<U256, ModuleError>;
    /// Moves OPEN from this module's balance (value sent with the call) to `to`.
    fn transfer(&mut self, to: Address, amount: U256) -> Result<(), ModuleError>;
    fn sstore(&mut self, slot: U256, value: U256) -> Result<(), ModuleError>;
    fn log(&mut self, topics: Vec<B256>, data: Bytes) -> Result<(), ModuleError>;
    fn charge(&mut self, gas: u64) -> Result<(), ModuleError>;
    /// The OPEN balance of an account.
    fn balance(&mut self, address: Address) -> Result<U256, ModuleError>;
    /// Moves OPEN out of the treasury. Only the governance module holds this right; any other
    /// module calling it reverts.
    fn spend_treasury(&mut self, to: Address, amount: U256) -> Result<(), ModuleError>;
    /// Calls another module as this module (its `caller` is this module's address, no value),
    /// on the same gas. A failing inner call undoes its own writes before the error returns.
    fn call_module(&mut self, to: Address, input: &[u8]) -> Result<Bytes, ModuleError>;
}

/// A protocol module at a fixed address.
pub trait Module: Send + Sync {
    fn address(&self) -> Address;
    fn name(&self) -> &'static str;
    fn call(&self, call: &CallContext<'_>, host: &mut dyn ModuleHost)
    -> Result<Bytes, ModuleError>;
}

/// Every module the chain runs. Order does not matter; addresses must be unique.
pub fn modules() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(ProtocolParams),
        Arc::new(Datanets),
        Arc::new(Models),
        Arc::new(Staking),
        Arc::new(Governance),
        Arc::new(Inference),
        Arc::new(Settlement),
    ]
}

/// Ethereum's precompiles plus OpenLedger's modules, as one revm precompile provider.
#[derive(Clone)]
pub struct OpenLedgerPrecompiles {
    eth: EthPrecompiles,
    modules: Arc<Vec<Arc<dyn Module>>>,
    addresses: AddressSet,
}

impl OpenLedgerPrecompiles {
    pub fn new(spec: SpecId) -> Self {
        let eth = EthPrecompiles::new(spec);
        let modules = Arc::new(modules());
        let addresses = Self::address_set(&eth, &modules);
        Self {
            eth,
            modules,
            addresses,
        }
    }

    fn address_set(eth: &EthPrecompiles, modules: &[Arc<dyn Module>]) -> AddressSet {
        let mut set = eth.warm_addresses().clone();
        set.extend(modules.iter().map(|m| m.address()));
        set
    }

    fn module(&self, address: &Address) -> Option<&Arc<dyn Module>> {
        self.modules.iter().find(|m| m.address() == *address)
    }
}

struct JournalHost<'a, CTX> {
    ctx: &'a mut CTX,
    address: Address,
    gas: Gas,
    is_static: bool,
    modules: &'a [Arc<dyn Module>],
    block_number: u64,
    block_timestamp: u64,
}

impl<CTX: ContextTr> JournalHost<'_, CTX> {
    fn move_open(&mut self, from: Address, to: Address, amount: U256) -> Result<(), ModuleError> {
        if self.is_static {
            return Err(ModuleError::reason("value transfer in a static call"));
        }
        self.charge(TRANSFER_GAS)?;
        for account in [from, to] {
            self.ctx
                .journal_mut()
                .load_account(account)
                .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        }
        match self
            .ctx
            .journal_mut()
            .transfer(from, to, amount)
            .map_err(|e| ModuleError::Fatal(e.to_string()))?
        {
            None => Ok(()),
            Some(e) => Err(ModuleError::reason(format!("transfer failed: {e:?}"))),
        }
    }
}

impl<CTX: ContextTr> ModuleHost for JournalHost<'_, CTX> {
    fn charge(&mut self, gas: u64) -> Result<(), ModuleError> {
        if self.gas.record_regular_cost(gas) {
            Ok(())
        } else {
            Err(ModuleError::OutOfGas)
        }
    }

    fn sload(&mut self, slot: U256) -> Result<U256, ModuleError> {
        self.sload_at(self.address, slot)
    }

    fn sload_at(&mut self, address: Address, slot: U256) -> Result<U256, ModuleError> {
        if address != self.address {
            self.ctx
                .journal_mut()
                .load_account(address)
                .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        }
        let load = self
            .ctx
            .journal_mut()
            .sload(address, slot)
            .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        self.charge(if load.is_cold {
            COLD_SLOAD_GAS
        } else {
            WARM_READ_GAS
        })?;
        Ok(load.data)
    }

    fn transfer(&mut self, to: Address, amount: U256) -> Result<(), ModuleError> {
        self.move_open(self.address, to, amount)
    }

    fn balance(&mut self, address: Address) -> Result<U256, ModuleError> {
        let load = self
            .ctx
            .journal_mut()
            .load_account(address)
            .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        let (balance, cold) = (load.data.info.balance, load.is_cold);
        self.charge(if cold { COLD_SLOAD_GAS } else { WARM_READ_GAS })?;
        Ok(balance)
    }

    fn spend_treasury(&mut self, to: Address, amount: U256) -> Result<(), ModuleError> {
        if self.address != GOVERNANCE {
            return Err(ModuleError::reason(
                "only the governance module may spend the treasury",
            ));
        }
        self.move_open(TREASURY, to, amount)
    }

    fn call_module(&mut self, to: Address, input: &[u8]) -> Result<Bytes, ModuleError> {
        let modules = self.modules;
        let module = modules
            .iter()
            .find(|m| m.address() == to)
            .ok_or_else(|| ModuleError::reason(format!("no module at {to}")))?;
        self.charge(CALL_BASE_GAS)?;
        self.ctx
            .journal_mut()
            .load_account(to)
            .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        let checkpoint = self.ctx.journal_mut().checkpoint();
        let call = CallContext {
            caller: self.address,
            value: U256::ZERO,
            is_static: self.is_static,
            input,
            block_number: self.block_number,
            block_timestamp: self.block_timestamp,
        };
        let mut inner = JournalHost {
            ctx: &mut *self.ctx,
            address: to,
            gas: Gas::new(self.gas.remaining()),
            is_static: self.is_static,
            modules,
            block_number: self.block_number,
            block_timestamp: self.block_timestamp,
        };
        let outcome = module.call(&call, &mut inner);
        let spent = inner.gas.limit() - inner.gas.remaining();
        if outcome.is_ok() {
            self.ctx.journal_mut().checkpoint_commit();
        } else {
            self.ctx.journal_mut().checkpoint_revert(checkpoint);
        }
        self.charge(spent)?;
        outcome
    }

    fn sstore(&mut self, slot: U256, value: U256) -> Result<(), ModuleError> {
        if self.is_static {
            return Err(ModuleError::reason("state change in a static call"));
        }
        let load = self
            .ctx
            .journal_mut()
            .sstore(self.address, slot, value)
            .map_err(|e| ModuleError::Fatal(e.to_string()))?;
        let r = &load.data;
        // EIP-2200 / EIP-2929 pricing, without refunds.
        let mut cost = if r.new_value == r.present_value {
            WARM_READ_GAS
        } else if r.original_value == r.present_value {
            if r.original_value.is_zero() {
                SSTORE_SET_GAS
            } else {
                SSTORE_RESET_GAS
            }
        } else {
            WARM_READ_GAS
        };
        if load.is_cold {
            cost += COLD_SLOAD_GAS;
        }
        self.charge(cost)
    }

    fn log(&mut self, topics: Vec<B256>, data: Bytes) -> Result<(), ModuleError> {
        if self.is_static {
            return Err(ModuleError::reason("log in a static call"));
        }
        self.charge(
            LOG_GAS + LOG_TOPIC_GAS * topics.len() as u64 + LOG_DATA_GAS * data.len() as u64,
        )?;
        self.ctx
            .journal_mut()
            .log(Log::new_unchecked(self.address, topics, data));
        Ok(())
    }
}

impl<CTX: ContextTr> PrecompileProvider<CTX> for OpenLedgerPrecompiles {
    type Output = InterpreterResult;

    fn set_spec(&mut self, spec: <CTX::Cfg as Cfg>::Spec) -> bool {
        let changed = <EthPrecompiles as PrecompileProvider<CTX>>::set_spec(&mut self.eth, spec);
        if changed {
            self.addresses = Self::address_set(&self.eth, &self.modules);
        }
        changed
    }

    fn run(
        &mut self,
        ctx: &mut CTX,
        inputs: &CallInputs,
    ) -> Result<Option<InterpreterResult>, String> {
        let Some(module) = self.module(&inputs.bytecode_address).cloned() else {
            return <EthPrecompiles as PrecompileProvider<CTX>>::run(&mut self.eth, ctx, inputs);
        };
        let input = inputs.input.as_bytes(ctx).to_vec();
        // A module keeps its state under its own address, so the identity it must act for is
        // the account that called it. Through DELEGATECALL or CALLCODE that is the delegating
        // contract, not the contract's own caller (who would otherwise be impersonated), and no
        // value reaches the module (DELEGATECALL's value is only apparent; CALLCODE pays the
        // contract itself).
        let direct = inputs.target_address == inputs.bytecode_address;
        let call = CallContext {
            caller: if direct {
                inputs.caller
            } else {
                inputs.target_address
            },
            value: match inputs.transfer_value() {
                Some(value) if direct => value,
                _ => U256::ZERO,
            },
            is_static: inputs.is_static,
            input: &input,
            block_number: ctx.block().number().saturating_to(),
            block_timestamp: ctx.block().timestamp().saturating_to(),
        };
        // Modules keep state under their own address, whoever delegate-called them.
        let address = inputs.bytecode_address;
        ctx.journal_mut()
            .load_account(address)
            .map_err(|e| e.to_string())?;
        ctx.journal_mut().touch_account(address);
        let mut host = JournalHost {
            ctx,
            address,
            gas: Gas::new(inputs.gas_limit),
            is_static: inputs.is_static,
            modules: &self.modules,
            block_number: call.block_number,
            block_timestamp: call.block_timestamp,
        };
        let outcome = host
            .charge(CALL_BASE_GAS)
            .and_then(|()| module.call(&call, &mut host));
        let mut gas = host.gas;
        let result = match outcome {
            Ok(output) => InterpreterResult::new(InstructionResult::Return, output, gas),
            Err(ModuleError::Revert(data)) => {
                InterpreterResult::new(InstructionResult::Revert, data, gas)
            }
            Err(ModuleError::OutOfGas) => {
                gas.spend_all();
                InterpreterResult::new(InstructionResult::PrecompileOOG, Bytes::new(), gas)
            }
            Err(ModuleError::Fatal(e)) => return Err(format!("{} module: {e}", module.name())),
        };
        Ok(Some(result))
    }

    fn warm_addresses(&self) -> &AddressSet {
        &self.addresses
    }

    fn contains(&self, address: &Address) -> bool {
        self.addresses.contains(address)
    }
}

/// The 4-byte function selector of a module call.
pub fn selector(call: &CallContext<'_>, module: &str) -> Result<[u8; 4], ModuleError> {
    call.input
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ModuleError::reason(format!("{module}: calldata has no function selector")))
}

/// Decodes a call's arguments, reverting with a reason that names the module.
pub fn decode<C: alloy_sol_types::SolCall>(module: &str, input: &[u8]) -> Result<C, ModuleError> {
    C::abi_decode(input).map_err(|e| ModuleError::reason(format!("{module}: bad arguments: {e}")))
}

/// The revert for a selector the module does not implement.
pub fn unknown_selector(module: &str) -> ModuleError {
    ModuleError::reason(format!("{module}: unknown function selector"))
}

/// Emits a Solidity event from a module.
pub fn emit(
    host: &mut dyn ModuleHost,
    event: impl alloy_sol_types::SolEvent,
) -> Result<(), ModuleError> {
    let log = event.encode_log_data();
    host.log(log.topics().to_vec(), log.data)
}

/// The ABI-encoded `uint256` a view function returns.
pub fn encode_u256(value: U256) -> Bytes {
    alloy_sol_types::SolValue::abi_encode(&value).into()
}

/// Rejects plain value transfers to a module that does not take payments.
pub fn non_payable(call: &CallContext<'_>) -> Result<(), ModuleError> {
    if call.value.is_zero() {
        Ok(())
    } else {
        Err(ModuleError::reason("module function is not payable"))
    }
}
