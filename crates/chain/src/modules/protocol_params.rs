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
pub const SETTLEMENT_CONTRIBUTORS_BPS: &str = "settlement.contributors_bps";
pub const SETTLEMENT_VALIDATORS_BPS: &str = "settlement.validators_bps";
pub const SETTLEMENT_MODEL_OWNER_BPS: &str = "settlement.model_owner_bps";
pub const SETTLEMENT_TREASURY_BPS: &str = "settlement.treasury_bps";
pub const INFERENCE_WITHDRAW_DELAY_BLOCKS: &str = "inference.withdraw_delay_blocks";
pub const STAKING_UNBONDING_BLOCKS: &str = "staking.unbonding_blocks";
pub const STAKING_SLASH_BPS: &str = "staking.slash_bps";
pub const STAKING_BLOCK_FEE_SHARE_BPS: &str = "staking.block_fee_share_bps";
pub const GOVERNANCE_VOTING_PERIOD_BLOCKS: &str = "governance.voting_period_blocks";
pub const GOVERNANCE_QUORUM_BPS: &str = "governance.quorum_bps";
pub const GOVERNANCE_THRESHOLD_BPS: &str = "governance.threshold_bps";
pub const GOVERNANCE_VETO_THRESHOLD_BPS: &str = "governance.veto_threshold_bps";
pub const GOVERNANCE_TIMELOCK_BLOCKS: &str = "governance.timelock_blocks";
pub const GOVERNANCE_DEPOSIT: &str = "governance.proposal_deposit";

/// Basis points in a whole (100%).
pub const BPS: u64 = 10_000;

/// The settlement fee split's parameters, in [`FeeSplit`] order.
pub const FEE_SPLIT_PARAMS: [&str; 4] = [
    SETTLEMENT_CONTRIBUTORS_BPS,
    SETTLEMENT_VALIDATORS_BPS,
    SETTLEMENT_MODEL_OWNER_BPS,
    SETTLEMENT_TREASURY_BPS,
];

/// Every parameter the protocol defines. Modules (datanets, staking, governance, later
/// settlement) read theirs from here; adding one is a line in this table.
///
/// | parameter | default | range |
/// |---|---|---|
/// | `block.gas_limit` | 30,000,000 | 1,000,000 – 1,000,000,000 |
/// | `base_fee.max_change_denominator` | 8 | 1 – 1,000 |
/// | `base_fee.elasticity_multiplier` | 2 | 1 – 100 |
/// | `datanet.creation_fee` | 10 OPEN | 0 – 1,000,000 OPEN |
/// | `datanet.default_review_quorum` | 1 | 1 – 100 |
/// | `settlement.contributors_bps` | 7,000 | 0 – 10,000 (the four shares sum to 10,000) |
/// | `settlement.validators_bps` | 1,000 | 0 – 10,000 |
/// | `settlement.model_owner_bps` | 1,500 | 0 – 10,000 |
/// | `settlement.treasury_bps` | 500 | 0 – 10,000 |
/// | `inference.withdraw_delay_blocks` | 100 | 1 – 1,000,000 |
/// | `staking.unbonding_blocks` | 50,400 | 1 – 10,000,000 |
/// | `staking.slash_bps` | 500 | 0 – 10,000 |
/// | `staking.block_fee_share_bps` | 5,000 | 0 – 10,000 |
/// | `governance.voting_period_blocks` | 20,160 | 10 – 10,000,000 |
/// | `governance.quorum_bps` | 3,340 | 1 – 10,000 |
/// | `governance.threshold_bps` | 5,000 | 1 – 9,999 |
/// | `governance.veto_threshold_bps` | 3,340 | 1 – 10,000 |
/// | `governance.timelock_blocks` | 100 | 0 – 1,000,000 |
/// | `governance.proposal_deposit` | 100 OPEN | 0 – 10,000,000 OPEN |
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
            SETTLEMENT_CONTRIBUTORS_BPS,
            7_000,
            0,
            BPS,
            "settlement: share of an inference fee paid to attributed contributors",
        ),
        p(
            SETTLEMENT_VALIDATORS_BPS,
            1_000,
            0,
            BPS,
            "settlement: share paid to curators/validators of the attributed rows",
        ),
        p(
            SETTLEMENT_MODEL_OWNER_BPS,
            1_500,
            0,
            BPS,
            "settlement: share paid to the model owner",
        ),
        p(
            SETTLEMENT_TREASURY_BPS,
            500,
            0,
            BPS,
            "settlement: share paid to the treasury (the four shares sum to 10000)",
        ),
        p(
            INFERENCE_WITHDRAW_DELAY_BLOCKS,
            100,
            1,
            1_000_000,
            "blocks between announcing a withdrawal of an inference deposit and paying it",
        ),
        p(
            STAKING_UNBONDING_BLOCKS,
            50_400,
            1,
            10_000_000,
            "blocks between unstake and withdrawal",
        ),
        p(
            STAKING_SLASH_BPS,
            500,
            0,
            BPS,
            "share of an account's stake (bonded and unbonding) a governance slash takes",
        ),
        p(
            STAKING_BLOCK_FEE_SHARE_BPS,
            5_000,
            0,
            BPS,
            "share of every block's base fees paid to stakers (the rest goes to the treasury)",
        ),
        p(
            GOVERNANCE_VOTING_PERIOD_BLOCKS,
            20_160,
            10,
            10_000_000,
            "blocks a proposal is open for votes",
        ),
        p(
            GOVERNANCE_QUORUM_BPS,
            3_340,
            1,
            BPS,
            "share of the staked OPEN at the snapshot that must vote",
        ),
        p(
            GOVERNANCE_THRESHOLD_BPS,
            5_000,
            1,
            BPS - 1,
            "for-votes must exceed this share of for + against + veto votes",
        ),
        p(
            GOVERNANCE_VETO_THRESHOLD_BPS,
            3_340,
            1,
            BPS,
            "veto votes above this share of all votes reject a proposal and forfeit its deposit",
        ),
        p(
            GOVERNANCE_TIMELOCK_BLOCKS,
            100,
            0,
            1_000_000,
            "blocks between the end of voting and execution",
        ),
        ParamSpec {
            name: GOVERNANCE_DEPOSIT,
            default: ONE_OPEN * U256::from(100),
            min: U256::ZERO,
            max: ONE_OPEN * U256::from(10_000_000),
            doc: "OPEN a proposer deposits; refunded unless the proposal is vetoed",
        },
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

/// The settlement fee split: how an inference fee is shared, in basis points of the fee.
/// Governance keeps the four shares summing to [`BPS`]; settlement reads them with
/// [`FeeSplit::read`] (from a state) or [`FeeSplit::read_from`] (inside a module call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSplit {
    pub contributors_bps: u64,
    /// Curators and validators of the attributed rows.
    pub validators_bps: u64,
    pub model_owner_bps: u64,
    pub treasury_bps: u64,
}

/// A fee divided by a [`FeeSplit`]; the parts always add up to the fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeShares {
    pub contributors: U256,
    pub validators: U256,
    pub model_owner: U256,
    pub treasury: U256,
}

impl FeeSplit {
    /// From values in [`FEE_SPLIT_PARAMS`] order.
    pub fn from_values(values: [U256; 4]) -> Self {
        let [c, v, m, t] = values.map(|x| x.saturating_to::<u64>());
        Self {
            contributors_bps: c,
            validators_bps: v,
            model_owner_bps: m,
            treasury_bps: t,
        }
    }

    /// The split in force in a state (e.g. the head, for the next block).
    pub fn read(view: &impl StateView) -> Result<Self, StateError> {
        let mut values = [U256::ZERO; 4];
        for (value, name) in values.iter_mut().zip(FEE_SPLIT_PARAMS) {
            *value = read(view, name)?;
        }
        Ok(Self::from_values(values))
    }

    /// The split in force, read from inside a module call.
    pub fn read_from(host: &mut dyn ModuleHost) -> Result<Self, ModuleError> {
        let mut values = [U256::ZERO; 4];
        for (value, name) in values.iter_mut().zip(FEE_SPLIT_PARAMS) {
            *value = ProtocolParams::read_from(host, name)?;
        }
        Ok(Self::from_values(values))
    }

    pub fn total_bps(&self) -> u64 {
        self.contributors_bps + self.validators_bps + self.model_owner_bps + self.treasury_bps
    }

    /// Whether the shares add up to the whole fee.
    pub fn is_whole(&self) -> bool {
        self.total_bps() == BPS
    }

    /// Divides `fee` by the split, rounding each share down; the rounding dust goes to the
    /// treasury so that nothing is created or lost.
    pub fn split(&self, fee: U256) -> FeeShares {
        let part = |bps: u64| fee * U256::from(bps) / U256::from(BPS);
        let contributors = part(self.contributors_bps);
        let validators = part(self.validators_bps);
        let model_owner = part(self.model_owner_bps);
        FeeShares {
            contributors,
            validators,
            model_owner,
            treasury: fee.saturating_sub(contributors + validators + model_owner),
        }
    }
}

/// The registry entry of a parameter, if the protocol defines it.
pub fn spec_of(name: &str) -> Option<ParamSpec> {
    registry().into_iter().find(|p| p.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_lie_in_their_ranges_and_the_default_fee_split_is_whole() {
        let specs = registry();
        for p in &specs {
            assert!(p.min <= p.default && p.default <= p.max, "{}", p.name);
            assert_eq!(specs.iter().filter(|q| q.name == p.name).count(), 1);
        }
        let split = FeeSplit::from_values(FEE_SPLIT_PARAMS.map(|n| spec_of(n).unwrap().default));
        assert!(split.is_whole(), "{split:?}");
    }

    #[test]
    fn a_split_fee_loses_nothing_and_rounding_goes_to_the_treasury() {
        let split = FeeSplit {
            contributors_bps: 3_333,
            validators_bps: 3_333,
            model_owner_bps: 3_333,
            treasury_bps: 1,
        };
        let shares = split.split(U256::from(100));
        assert_eq!(
            (shares.contributors, shares.validators, shares.model_owner),
            (U256::from(33), U256::from(33), U256::from(33))
        );
        assert_eq!(shares.treasury, U256::from(1));
        let big = split.split(U256::MAX / U256::from(BPS));
        assert_eq!(
            big.contributors + big.validators + big.model_owner + big.treasury,
            U256::MAX / U256::from(BPS)
        );
    }
}
