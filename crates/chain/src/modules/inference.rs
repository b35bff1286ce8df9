//! `Inference`: prepaid OPEN deposits that pay for model inference (precompile at
//! [`INFERENCE`]).
//!
//! The module's balance is the sum of every account's deposit. A deposit leaves only two ways:
//! a withdrawal the account announced `inference.withdraw_delay_blocks` earlier, or a charge
//! from the `Settlement` module for usage an operator the account approved reported. The delay
//! is what lets a serving operator check a deposit before computing: whatever is deposited now
//! stays chargeable for at least that many blocks.

use super::protocol_params::{INFERENCE_WITHDRAW_DELAY_BLOCKS, ProtocolParams};
use super::storage::{field, load_u64, slot, store_u64};
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::addresses::{INFERENCE, SETTLEMENT};
use openledger_primitives::{Address, Bytes, U256};

mod abi {
    alloy_sol_types::sol!("solidity/IInference.sol");
}
pub use abi::IInference;
use abi::IInference as I;

// Deposit record fields.
const D_BALANCE: u64 = 0;
const D_WITHDRAW: u64 = 1;
const D_RELEASE: u64 = 2;

fn deposit(account: Address) -> U256 {
    slot("deposit", &[account.as_slice()])
}

fn operator(account: Address, operator: Address) -> U256 {
    slot("operator", &[account.as_slice(), operator.as_slice()])
}

pub struct Inference;

impl Module for Inference {
    fn address(&self) -> Address {
        INFERENCE
    }

    fn name(&self) -> &'static str {
        "Inference"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        let selector = selector(call, self.name())?;
        if selector != I::depositCall::SELECTOR {
            non_payable(call)?;
        }
        let input = call.input;
        let caller = call.caller;
        match selector {
            I::depositCall::SELECTOR => {
                let a = decode::<I::depositCall>(self.name(), input)?;
                if call.value.is_zero() {
                    return Err(ModuleError::revert(I::ZeroAmount {}));
                }
                let slot = field(deposit(caller), D_BALANCE);
                let balance = host.sload(slot)? + call.value;
                host.sstore(slot, balance)?;
                emit(
                    host,
                    I::Deposited {
                        account: caller,
                        amount: call.value,
                        balance,
                    },
                )?;
                if !a.operator.is_zero() {
                    set_operator(host, caller, a.operator, true)?;
                }
                Ok(Bytes::new())
            }
            I::setOperatorCall::SELECTOR => {
                let a = decode::<I::setOperatorCall>(self.name(), input)?;
                set_operator(host, caller, a.operator, a.approved)?;
                Ok(Bytes::new())
            }
            I::requestWithdrawCall::SELECTOR => {
                let a = decode::<I::requestWithdrawCall>(self.name(), input)?;
                if a.amount.is_zero() {
                    return Err(ModuleError::revert(I::ZeroAmount {}));
                }
                let record = deposit(caller);
                let balance = host.sload(field(record, D_BALANCE))?;
                if a.amount > balance {
                    return Err(ModuleError::revert(I::InsufficientDeposit {
                        account: caller,
                        balance,
                        requested: a.amount,
                    }));
                }
                let delay: u64 = ProtocolParams::read_from(host, INFERENCE_WITHDRAW_DELAY_BLOCKS)?
                    .saturating_to();
                let release = call.block_number.saturating_add(delay);
                host.sstore(field(record, D_WITHDRAW), a.amount)?;
                store_u64(host, field(record, D_RELEASE), release)?;
                emit(
                    host,
                    I::WithdrawRequested {
                        account: caller,
                        amount: a.amount,
                        releaseBlock: release,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::withdrawCall::SELECTOR => {
                let record = deposit(caller);
                let requested = host.sload(field(record, D_WITHDRAW))?;
                if requested.is_zero() {
                    return Err(ModuleError::revert(I::NoWithdrawRequested {}));
                }
                let release = load_u64(host, field(record, D_RELEASE))?;
                if call.block_number < release {
                    return Err(ModuleError::revert(I::WithdrawNotReady {
                        releaseBlock: release,
                    }));
                }
                // Charges since the announcement may have left less than was announced.
                let balance = host.sload(field(record, D_BALANCE))?;
                let amount = requested.min(balance);
                host.sstore(field(record, D_BALANCE), balance - amount)?;
                host.sstore(field(record, D_WITHDRAW), U256::ZERO)?;
                store_u64(host, field(record, D_RELEASE), 0)?;
                host.transfer(caller, amount)?;
                emit(
                    host,
                    I::Withdrawn {
                        account: caller,
                        amount,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::chargeCall::SELECTOR => {
                if caller != SETTLEMENT {
                    return Err(ModuleError::revert(I::NotSettlement { caller }));
                }
                let a = decode::<I::chargeCall>(self.name(), input)?;
                if host.sload(operator(a.account, a.operator))?.is_zero() {
                    return Err(ModuleError::revert(I::NotOperator {
                        account: a.account,
                        operator: a.operator,
                    }));
                }
                let slot = field(deposit(a.account), D_BALANCE);
                let balance = host.sload(slot)?;
                if a.amount > balance {
                    return Err(ModuleError::revert(I::InsufficientDeposit {
                        account: a.account,
                        balance,
                        requested: a.amount,
                    }));
                }
                host.sstore(slot, balance - a.amount)?;
                host.transfer(SETTLEMENT, a.amount)?;
                emit(
                    host,
                    I::Charged {
                        account: a.account,
                        operator: a.operator,
                        amount: a.amount,
                        balance: balance - a.amount,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::depositOfCall::SELECTOR => {
                let a = decode::<I::depositOfCall>(self.name(), input)?;
                let record = deposit(a.account);
                let out = I::depositOfReturn {
                    balance: host.sload(field(record, D_BALANCE))?,
                    withdrawRequested: host.sload(field(record, D_WITHDRAW))?,
                    releaseBlock: load_u64(host, field(record, D_RELEASE))?,
                };
                Ok(I::depositOfCall::abi_encode_returns(&out).into())
            }
            I::isOperatorCall::SELECTOR => {
                let a = decode::<I::isOperatorCall>(self.name(), input)?;
                let approved = !host.sload(operator(a.account, a.operator))?.is_zero();
                Ok(approved.abi_encode().into())
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

fn set_operator(
    host: &mut dyn ModuleHost,
    account: Address,
    who: Address,
    approved: bool,
) -> Result<(), ModuleError> {
    host.sstore(operator(account, who), U256::from(approved as u8))?;
    emit(
        host,
        I::OperatorSet {
            account,
            operator: who,
            approved,
        },
    )
}
