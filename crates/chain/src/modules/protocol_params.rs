//! `ProtocolParams`: the protocol's tunable numbers, stored in EVM storage at
//! [`PROTOCOL_PARAMS`] and changed only by the governance module.
//!
//! Each parameter lives in the slot `keccak256(name)`, so anyone can read one with
//! `eth_getStorageAt` and prove it with `openledger_getProof`. The chain reads the block gas
//! limit and the base-fee parameters from here at the start of every block.

use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use crate::state::{StateError, StateView};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::{
    Address, Bytes, U256,
    addresses::{GOVERNANCE, PROTOCOL_PARAMS},
    keccak256,
    units::ONE_OPEN,
};

alloy_sol_types::sol!("solidity/IProtocolParams.sol");

/// One protocol parameter: its name, genesis value and the range governance may move it in.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub default: U256,
    pub min: U256,
    pub max: U256,
    pub doc: &'static str,
}

const fn p(name: &'static str, default: u64, min: u64, max: u64, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        default: U256::from_limbs([default, 0, 0, 0]),
        min: U256::from_limbs([min, 0, 0, 0]),
        max: U256::from_limbs([max, 0, 0, 0]),
        doc,
    }
}

pub const BLOCK_GAS_LIMIT: &str = "block.gas_limit";
pub const BASE_FEE_MAX_CHANGE_DENOMINATOR: &str = "base_fee.max_change_denominator";
pub const BASE_FEE_ELASTICITY: &str = "base_fee.elasticity_multiplier";

/// Every parameter the protocol defines. Later modules (datanets, settlement, staking,
/// governance) read theirs from here; adding one is a line in this table.
pub fn registry() -> Vec<ParamSpec> {
    vec![
        p(
            BLOCK_GAS_LIMIT,
            30_000_000,
            1_000_000,
            1_000_000_000,
            "gas limit of every block",
        ),
        p(
            BASE_FEE_MAX_CHANGE_DENOMINATOR,
            8,
            1,
            1_000,
            "EIP-1559: base fee moves at most 1/n per block",
        ),
        p(
            BASE_FEE_ELASTICITY,
            2,
            1,
            100,
            "EIP-1559: gas target = gas limit / n",
        ),
        ParamSpec {
            name: "datanet.creation_fee",
            default: ONE_OPEN * U256::from(10),
            min: U256::ZERO,
            max: ONE_OPEN * U256::from(1_000_000),
            doc: "OPEN paid to the treasury to create a datanet",
        },
        p(
            "datanet.default_review_quorum",
            1,
            1,
            100,
            "curator approvals needed to accept a contribution",
        ),
        p(
            "settlement.contributors_bps",
            7_000,
            0,
            10_000,
            "share of an inference fee paid to attributed contributors",
        ),
        p(
            "settlement.validators_bps",
            1_000,
            0,
            10_000,
            "share paid to curators of the attributed rows",
        ),
        p(
            "settlement.model_owner_bps",
            1_500,
            0,
            10_000,
            "share paid to the model owner",
        ),
        p(
            "settlement.treasury_bps",
            500,
            0,
            10_000,
            "share paid to the treasury",
        ),
        p(
            "staking.unbonding_blocks",
            50_400,
            1,
            10_000_000,
            "blocks between unstake and withdrawal",
        ),
        p(
            "governance.voting_period_blocks",
            20_160,
            10,
            10_000_000,
            "blocks a proposal is open for votes",
        ),
        p(
            "governance.quorum_bps",
            3_340,
            1,
            10_000,
            "share of staked OPEN that must vote",
        ),
        p(
            "governance.threshold_bps",
            5_000,
            1,
            10_000,
            "share of non-abstain votes needed to pass",
        ),
        p(
            "governance.timelock_blocks",
            100,
            0,
            1_000_000,
            "blocks between passing and execution",
        ),
    ]
}

/// Storage slot of a parameter.
pub fn slot(name: &str) -> U256 {
    U256::from_be_bytes(keccak256(name.as_bytes()).0)
}

/// Reads a parameter from a state, falling back to its genesis default if unset.
pub fn read(view: &impl StateView, name: &str) -> Result<U256, StateError> {
    let raw = view.storage(PROTOCOL_PARAMS, slot(name))?;
    let default = registry()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.default);
    Ok(ProtocolParams::decode_stored(
        raw,
        default.unwrap_or_default(),
    ))
}

/// Reads a parameter that the chain uses as a `u64` (gas, counts), saturating.
pub fn read_u64(view: &impl StateView, name: &str) -> Result<u64, StateError> {
    Ok(read(view, name)?.saturating_to())
}

/// The module itself.
pub struct ProtocolParams;

impl ProtocolParams {
    fn spec(name: &str) -> Result<ParamSpec, ModuleError> {
        registry()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                ModuleError::revert(IProtocolParams::UnknownParam {
                    name: name.to_string(),
                })
            })
    }

    /// Zero in storage means "never set": the registry default applies. A parameter whose
    /// range includes zero stores zero as `U256::MAX`, which no range allows.
    fn load(host: &mut dyn ModuleHost, spec: &ParamSpec) -> Result<U256, ModuleError> {
        Ok(Self::decode_stored(
            host.sload(slot(spec.name))?,
            spec.default,
        ))
    }

    /// Reads a parameter from inside another module's call.
    pub fn read_from(host: &mut dyn ModuleHost, name: &str) -> Result<U256, ModuleError> {
        let spec = Self::spec(name)?;
        Ok(Self::decode_stored(
            host.sload_at(PROTOCOL_PARAMS, slot(spec.name))?,
            spec.default,
        ))
    }

    fn decode_stored(raw: U256, default: U256) -> U256 {
        match raw {
            r if r.is_zero() => default,
            r if r == U256::MAX => U256::ZERO,
            r => r,
        }
    }

    /// Storage word for a value (see [`Self::load`]).
    pub fn stored(value: U256) -> U256 {
        if value.is_zero() { U256::MAX } else { value }
    }
}

impl Module for ProtocolParams {
    fn address(&self) -> Address {
        PROTOCOL_PARAMS
    }

    fn name(&self) -> &'static str {
        "ProtocolParams"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        non_payable(call)?;
        let selector = selector(call, self.name())?;
        match selector {
            IProtocolParams::getCall::SELECTOR => {
                let args = decode::<IProtocolParams::getCall>(self.name(), call.input)?;
                let spec = Self::spec(&args.name)?;
                Ok(encode_u256(Self::load(host, &spec)?))
            }
            IProtocolParams::allCall::SELECTOR => {
                let specs = registry();
                let mut names = Vec::with_capacity(specs.len());
                let mut values = Vec::with_capacity(specs.len());
                for spec in &specs {
                    names.push(spec.name.to_string());
                    values.push(Self::load(host, spec)?);
                }
                Ok((names, values).abi_encode_params().into())
            }
            IProtocolParams::setCall::SELECTOR => {
                let args = decode::<IProtocolParams::setCall>(self.name(), call.input)?;
                if call.caller != GOVERNANCE {
                    return Err(ModuleError::revert(IProtocolParams::NotGovernance {
                        caller: call.caller,
                    }));
                }
                let spec = Self::spec(&args.name)?;
                if args.value < spec.min || args.value > spec.max {
                    return Err(ModuleError::revert(IProtocolParams::OutOfBounds {
                        name: args.name,
                        value: args.value,
                        min: spec.min,
                        max: spec.max,
                    }));
                }
                let old = Self::load(host, &spec)?;
                host.sstore(slot(spec.name), Self::stored(args.value))?;
                let event = IProtocolParams::ParamChanged {
                    key: keccak256(spec.name.as_bytes()),
                    name: args.name,
                    oldValue: old,
                    newValue: args.value,
                };
                emit(host, event)?;
                Ok(Bytes::new())
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}
