//! `Governance`: proposals voted by staked OPEN (precompile at [`GOVERNANCE`]).
//!
//! Governance is the one account `ProtocolParams.set`, `Staking.slash` and the treasury answer
//! to. A proposal carries its actions (parameter changes, treasury payments, slashes — or none,
//! for a text proposal); everything is checked when it is made, so a proposal that could never
//! apply (an unknown parameter, a value out of range, a settlement fee split that does not sum
//! to 10,000 bps) is refused with a readable error instead of being voted on.
//!
//! Voting weight is the voter's Staking power at the snapshot block, the block before the
//! proposal: stake moved during the vote changes nothing. The rules (voting period, quorum,
//! thresholds, timelock) are copied from `ProtocolParams` into the proposal when it is made.
//! `execute` applies all actions through the same host call, so they take effect together or,
//! if any fails (the treasury is short, the split no longer sums to 10,000 because another
//! proposal changed it), the call reverts and nothing changes. The chain reads its own
//! parameters (gas limit, base fee) at the start of each block, so those changes apply from the
//! next block.

use super::datanets::{IDatanets, contribution_payees};
use super::protocol_params::{
    BPS, FEE_SPLIT_PARAMS, FeeSplit, GOVERNANCE_DEPOSIT, GOVERNANCE_QUORUM_BPS,
    GOVERNANCE_THRESHOLD_BPS, GOVERNANCE_TIMELOCK_BLOCKS, GOVERNANCE_VETO_THRESHOLD_BPS,
    GOVERNANCE_VOTING_PERIOD_BLOCKS, IProtocolParams, ProtocolParams, spec_of,
};
use super::staking::{IStaking, power_at, total_at};
use super::storage::{
    field, load_address, load_string, load_u64, slot, store_address, store_string, store_u64,
};
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::SolCall;
use openledger_primitives::addresses::{
    DATANETS, GOVERNANCE, PROTOCOL_PARAMS, STAKING, SYSTEM, TREASURY,
};
use openledger_primitives::{Address, Bytes, U256};

mod abi {
    alloy_sol_types::sol!("solidity/IGovernance.sol");
}
pub use abi::IGovernance;
use abi::IGovernance as I;

pub const MAX_DESCRIPTION_BYTES: usize = 4_096;
/// Actions of each kind one proposal may carry.
pub const MAX_ACTIONS: usize = 16;

/// Vote choices, as `vote`'s `support` argument.
pub const AGAINST: u8 = 0;
pub const FOR: u8 = 1;
pub const ABSTAIN: u8 = 2;
pub const VETO: u8 = 3;

/// A proposal's state, as `getProposal` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProposalState {
    Active = 0,
    Defeated = 1,
    Vetoed = 2,
    /// Passed; the timelock is running.
    Queued = 3,
    Executable = 4,
    Executed = 5,
}

impl ProposalState {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Active,
            1 => Self::Defeated,
            2 => Self::Vetoed,
            3 => Self::Queued,
            4 => Self::Executable,
            5 => Self::Executed,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Defeated => "defeated",
            Self::Vetoed => "vetoed",
            Self::Queued => "queued",
            Self::Executable => "executable",
            Self::Executed => "executed",
        }
    }
}

// Proposal record fields.
const P_PROPOSER: u64 = 0;
const P_DEPOSIT: u64 = 1;
const P_SNAPSHOT: u64 = 2;
const P_END: u64 = 3;
const P_TIMELOCK: u64 = 4;
const P_QUORUM_BPS: u64 = 5;
const P_THRESHOLD_BPS: u64 = 6;
const P_VETO_BPS: u64 = 7;
const P_TOTAL_POWER: u64 = 8;
/// Tallies by choice: `P_TALLY + support`.
const P_TALLY: u64 = 9;
const P_FLAGS: u64 = 13;
const P_PARAMS: u64 = 14;
const P_SPENDS: u64 = 15;
const P_SLASHES: u64 = 16;
/// A string: its chunks hang off a hash of this slot, so it goes last.
const P_DESCRIPTION: u64 = 17;
/// Contributions to remove for fraud (`proposeRemoval`); the description's chunks live at a
/// hash of its slot, so this field after it is free.
const P_REMOVALS: u64 = 18;

const FLAG_EXECUTED: u64 = 1;
const FLAG_DEPOSIT_SETTLED: u64 = 2;
/// The chain tried to execute it at a block start and it failed; it is left to `execute`.
const FLAG_AUTO_FAILED: u64 = 4;

/// Proposals `executeReady` looks at per block, from the oldest not yet final: bounds the
/// hook's gas whatever the backlog.
pub const AUTO_SCAN: u64 = 16;

fn cursor_slot() -> U256 {
    slot("governance.auto_cursor", &[])
}

fn proposal(id: u64) -> U256 {
    slot("proposal", &[&id.to_be_bytes()])
}

fn action(kind: &str, id: u64, i: u64) -> U256 {
    slot(kind, &[&id.to_be_bytes(), &i.to_be_bytes()])
}

fn vote_slot(id: u64, voter: Address) -> U256 {
    slot("vote", &[&id.to_be_bytes(), voter.as_slice()])
}

fn count_slot() -> U256 {
    slot("proposals.count", &[])
}

fn invalid(what: impl Into<String>) -> ModuleError {
    ModuleError::revert(I::InvalidProposal { what: what.into() })
}

fn param_u64(host: &mut dyn ModuleHost, name: &str) -> Result<u64, ModuleError> {
    Ok(ProtocolParams::read_from(host, name)?.saturating_to())
}

/// A proposal's rules and tallies, as stored.
struct Proposal {
    id: u64,
    proposer: Address,
    deposit: U256,
    snapshot: u64,
    end: u64,
    timelock: u64,
    quorum_bps: U256,
    threshold_bps: U256,
    veto_bps: U256,
    total_power: U256,
    tally: [U256; 4],
    flags: u64,
}

impl Proposal {
    fn load(host: &mut dyn ModuleHost, id: u64) -> Result<Self, ModuleError> {
        let p = proposal(id);
        let proposer = load_address(host, field(p, P_PROPOSER))?;
        if proposer.is_zero() {
            return Err(ModuleError::revert(I::UnknownProposal { proposalId: id }));
        }
        let mut tally = [U256::ZERO; 4];
        for (i, t) in tally.iter_mut().enumerate() {
            *t = host.sload(field(p, P_TALLY + i as u64))?;
        }
        Ok(Self {
            id,
            proposer,
            deposit: host.sload(field(p, P_DEPOSIT))?,
            snapshot: load_u64(host, field(p, P_SNAPSHOT))?,
            end: load_u64(host, field(p, P_END))?,
            timelock: load_u64(host, field(p, P_TIMELOCK))?,
            quorum_bps: host.sload(field(p, P_QUORUM_BPS))?,
            threshold_bps: host.sload(field(p, P_THRESHOLD_BPS))?,
            veto_bps: host.sload(field(p, P_VETO_BPS))?,
            total_power: host.sload(field(p, P_TOTAL_POWER))?,
            tally,
            flags: load_u64(host, field(p, P_FLAGS))?,
        })
    }

    fn votes(&self) -> U256 {
        self.tally.iter().copied().fold(U256::ZERO, |a, b| a + b)
    }

    /// Votes needed for quorum.
    fn quorum_votes(&self) -> U256 {
        (self.total_power * self.quorum_bps).div_ceil(U256::from(BPS))
    }

    fn executable_block(&self) -> u64 {
        self.end.saturating_add(self.timelock).saturating_add(1)
    }

    fn vetoed(&self) -> bool {
        let votes = self.votes();
        self.quorum_reached() && self.tally[VETO as usize] * U256::from(BPS) > self.veto_bps * votes
    }

    fn quorum_reached(&self) -> bool {
        let votes = self.votes();
        !votes.is_zero() && votes >= self.quorum_votes()
    }

    fn state(&self, block: u64) -> ProposalState {
        if self.flags & FLAG_EXECUTED != 0 {
            return ProposalState::Executed;
        }
        if block <= self.end {
            return ProposalState::Active;
        }
        if !self.quorum_reached() {
            return ProposalState::Defeated;
        }
        if self.vetoed() {
            return ProposalState::Vetoed;
        }
        let decisive =
            self.tally[FOR as usize] + self.tally[AGAINST as usize] + self.tally[VETO as usize];
        if self.tally[FOR as usize] * U256::from(BPS) <= self.threshold_bps * decisive {
            return ProposalState::Defeated;
        }
        if block < self.executable_block() {
            ProposalState::Queued
        } else {
            ProposalState::Executable
        }
    }

    /// Refunds the deposit, or forfeits it to the treasury if the proposal was vetoed.
    fn settle_deposit(&mut self, host: &mut dyn ModuleHost, block: u64) -> Result<(), ModuleError> {
        self.flags |= FLAG_DEPOSIT_SETTLED;
        store_u64(host, field(proposal(self.id), P_FLAGS), self.flags)?;
        if self.deposit.is_zero() {
            return Ok(());
        }
        if self.state(block) == ProposalState::Vetoed {
            host.transfer(TREASURY, self.deposit)?;
            emit(
                host,
                I::DepositForfeited {
                    proposalId: self.id,
                    amount: self.deposit,
                },
            )
        } else {
            host.transfer(self.proposer, self.deposit)?;
            emit(
                host,
                I::DepositRefunded {
                    proposalId: self.id,
                    proposer: self.proposer,
                    amount: self.deposit,
                },
            )
        }
    }
}

/// Checks the parameter changes of a proposal against the registry and the current values.
fn check_params(
    host: &mut dyn ModuleHost,
    names: &[String],
    values: &[U256],
) -> Result<(), ModuleError> {
    for (i, (name, &value)) in names.iter().zip(values).enumerate() {
        let spec = spec_of(name)
            .ok_or_else(|| ModuleError::revert(I::UnknownParam { name: name.clone() }))?;
        if value < spec.min || value > spec.max {
            return Err(ModuleError::revert(I::ParamOutOfRange {
                name: name.clone(),
                value,
                min: spec.min,
                max: spec.max,
            }));
        }
        if names[..i].contains(name) {
            return Err(ModuleError::revert(I::DuplicateParam {
                name: name.clone(),
            }));
        }
    }
    if names.iter().any(|n| FEE_SPLIT_PARAMS.contains(&n.as_str())) {
        let mut split = [U256::ZERO; 4];
        for (value, param) in split.iter_mut().zip(FEE_SPLIT_PARAMS) {
            *value = match names.iter().position(|n| n == param) {
                Some(i) => values[i],
                None => ProtocolParams::read_from(host, param)?,
            };
        }
        let sum = split.iter().copied().fold(U256::ZERO, |a, b| a + b);
        if sum != U256::from(BPS) {
            return Err(ModuleError::revert(I::FeeSplitNotWhole { sumBps: sum }));
        }
    }
    Ok(())
}

fn propose(
    host: &mut dyn ModuleHost,
    call: &CallContext<'_>,
    a: I::proposeCall,
) -> Result<Bytes, ModuleError> {
    let required = ProtocolParams::read_from(host, GOVERNANCE_DEPOSIT)?;
    if call.value != required {
        return Err(ModuleError::revert(I::WrongDeposit {
            required,
            paid: call.value,
        }));
    }
    if a.description.is_empty() || a.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(invalid("description must be 1 to 4096 bytes"));
    }
    if a.paramNames.len() != a.paramValues.len() {
        return Err(invalid("paramNames and paramValues differ in length"));
    }
    if a.spendTo.len() != a.spendAmounts.len() {
        return Err(invalid("spendTo and spendAmounts differ in length"));
    }
    if a.paramNames.len() > MAX_ACTIONS
        || a.spendTo.len() > MAX_ACTIONS
        || a.slashAccounts.len() > MAX_ACTIONS
    {
        return Err(invalid("at most 16 actions of each kind"));
    }
    check_params(host, &a.paramNames, &a.paramValues)?;
    for (to, amount) in a.spendTo.iter().zip(&a.spendAmounts) {
        if to.is_zero() || amount.is_zero() {
            return Err(invalid(
                "a treasury payment needs a recipient and an amount",
            ));
        }
    }
    if a.slashAccounts.iter().any(|s| s.is_zero()) {
        return Err(invalid("cannot slash the zero address"));
    }

    let id = load_u64(host, count_slot())? + 1;
    store_u64(host, count_slot(), id)?;
    let snapshot = call.block_number.saturating_sub(1);
    let period = param_u64(host, GOVERNANCE_VOTING_PERIOD_BLOCKS)?;
    let end = call.block_number.saturating_add(period);
    let total_power = total_at(host, snapshot)?;
    let p = proposal(id);
    store_address(host, field(p, P_PROPOSER), call.caller)?;
    host.sstore(field(p, P_DEPOSIT), call.value)?;
    store_u64(host, field(p, P_SNAPSHOT), snapshot)?;
    store_u64(host, field(p, P_END), end)?;
    let timelock = param_u64(host, GOVERNANCE_TIMELOCK_BLOCKS)?;
    store_u64(host, field(p, P_TIMELOCK), timelock)?;
    for (f, name) in [
        (P_QUORUM_BPS, GOVERNANCE_QUORUM_BPS),
        (P_THRESHOLD_BPS, GOVERNANCE_THRESHOLD_BPS),
        (P_VETO_BPS, GOVERNANCE_VETO_THRESHOLD_BPS),
    ] {
        let v = ProtocolParams::read_from(host, name)?;
        host.sstore(field(p, f), v)?;
    }
    host.sstore(field(p, P_TOTAL_POWER), total_power)?;
    store_u64(host, field(p, P_PARAMS), a.paramNames.len() as u64)?;
    for (i, (name, value)) in a.paramNames.iter().zip(&a.paramValues).enumerate() {
        let base = action("proposal.param", id, i as u64);
        host.sstore(field(base, 1), *value)?;
        store_string(host, base, name)?;
    }
    store_u64(host, field(p, P_SPENDS), a.spendTo.len() as u64)?;
    for (i, (to, amount)) in a.spendTo.iter().zip(&a.spendAmounts).enumerate() {
        let base = action("proposal.spend", id, i as u64);
        store_address(host, field(base, 0), *to)?;
        host.sstore(field(base, 1), *amount)?;
    }
    store_u64(host, field(p, P_SLASHES), a.slashAccounts.len() as u64)?;
    for (i, account) in a.slashAccounts.iter().enumerate() {
        store_address(host, action("proposal.slash", id, i as u64), *account)?;
    }
    store_string(host, field(p, P_DESCRIPTION), &a.description)?;
    emit(
        host,
        I::ProposalCreated {
            proposalId: id,
            proposer: call.caller,
            description: a.description,
            snapshotBlock: snapshot,
            endBlock: end,
            deposit: call.value,
        },
    )?;
    Ok(encode_u256(U256::from(id)))
}

fn vote(
    host: &mut dyn ModuleHost,
    call: &CallContext<'_>,
    a: I::voteCall,
) -> Result<Bytes, ModuleError> {
    let p = Proposal::load(host, a.proposalId)?;
    if a.support > VETO {
        return Err(ModuleError::revert(I::InvalidSupport {
            support: a.support,
        }));
    }
    if call.block_number > p.end {
        return Err(ModuleError::revert(I::VotingClosed {
            proposalId: p.id,
            endBlock: p.end,
        }));
    }
    let weight = power_at(host, call.caller, p.snapshot)?;
    if weight.is_zero() {
        return Err(ModuleError::revert(I::NoVotingPower {
            voter: call.caller,
            snapshotBlock: p.snapshot,
        }));
    }
    let v = vote_slot(p.id, call.caller);
    // Field 0 holds `support + 1` (0 = not voted), field 1 the weight counted.
    let previous = load_u64(host, field(v, 0))?;
    let changed = previous != 0;
    if changed {
        let old_support = (previous - 1) as u8;
        if old_support == a.support {
            return Err(ModuleError::revert(I::AlreadyVoted {
                proposalId: p.id,
                voter: call.caller,
                support: a.support,
            }));
        }
        let old_weight = host.sload(field(v, 1))?;
        let t = field(proposal(p.id), P_TALLY + u64::from(old_support));
        let left = host.sload(t)?.saturating_sub(old_weight);
        host.sstore(t, left)?;
    }
    let t = field(proposal(p.id), P_TALLY + u64::from(a.support));
    let tally = host.sload(t)? + weight;
    host.sstore(t, tally)?;
    store_u64(host, field(v, 0), u64::from(a.support) + 1)?;
    host.sstore(field(v, 1), weight)?;
    emit(
        host,
        I::VoteCast {
            proposalId: p.id,
            voter: call.caller,
            support: a.support,
            weight,
            changed,
        },
    )?;
    Ok(Bytes::new())
}

fn execute(
    host: &mut dyn ModuleHost,
    call: &CallContext<'_>,
    id: u64,
) -> Result<Bytes, ModuleError> {
    let mut p = Proposal::load(host, id)?;
    let state = p.state(call.block_number);
    if state != ProposalState::Executable {
        return Err(ModuleError::revert(I::NotExecutable {
            proposalId: id,
            state: state as u8,
            executableBlock: p.executable_block(),
        }));
    }
    p.flags |= FLAG_EXECUTED;
    store_u64(host, field(proposal(id), P_FLAGS), p.flags)?;

    let base = proposal(id);
    let params = load_u64(host, field(base, P_PARAMS))?;
    let mut touches_split = false;
    for i in 0..params {
        let a = action("proposal.param", id, i);
        let name = load_string(host, a)?;
        let value = host.sload(field(a, 1))?;
        touches_split |= FEE_SPLIT_PARAMS.contains(&name.as_str());
        let set = IProtocolParams::setCall { name, value };
        host.call_module(PROTOCOL_PARAMS, &set.abi_encode())?;
    }
    if touches_split {
        // Another proposal may have moved the split since this one was checked.
        let split = FeeSplit::read_from(host)?;
        if !split.is_whole() {
            return Err(ModuleError::revert(I::FeeSplitNotWhole {
                sumBps: U256::from(split.total_bps()),
            }));
        }
    }

    let spends = load_u64(host, field(base, P_SPENDS))?;
    let mut payments = Vec::with_capacity(spends as usize);
    for i in 0..spends {
        let a = action("proposal.spend", id, i);
        payments.push((load_address(host, field(a, 0))?, host.sload(field(a, 1))?));
    }
    let needed = payments.iter().fold(U256::ZERO, |s, (_, v)| s + v);
    if !needed.is_zero() {
        let balance = host.balance(TREASURY)?;
        if balance < needed {
            return Err(ModuleError::revert(I::TreasuryInsufficient {
                balance,
                needed,
            }));
        }
    }
    for (to, amount) in payments {
        host.spend_treasury(to, amount)?;
        emit(
            host,
            I::TreasurySpent {
                proposalId: id,
                to,
                amount,
            },
        )?;
    }

    let slashes = load_u64(host, field(base, P_SLASHES))?;
    for i in 0..slashes {
        let account = load_address(host, action("proposal.slash", id, i))?;
        let slash = IStaking::slashCall { account };
        host.call_module(STAKING, &slash.abi_encode())?;
    }

    // Fraud: the rows stop earning, and the curators who accepted them lose stake.
    let removals = load_u64(host, field(base, P_REMOVALS))?;
    for i in 0..removals {
        let contribution = load_u64(host, action("proposal.remove", id, i))?;
        let remove = IDatanets::removeForFraudCall {
            contributionId: contribution,
        };
        let out = host.call_module(DATANETS, &remove.abi_encode())?;
        let curators = IDatanets::removeForFraudCall::abi_decode_returns(&out).map_err(|e| {
            ModuleError::Fatal(format!("Datanets answered removeForFraud badly: {e}"))
        })?;
        for account in curators {
            let slash = IStaking::slashCall { account };
            host.call_module(STAKING, &slash.abi_encode())?;
        }
    }

    if p.flags & FLAG_DEPOSIT_SETTLED == 0 {
        p.settle_deposit(host, call.block_number)?;
    }
    emit(host, I::ProposalExecuted { proposalId: id })?;
    Ok(Bytes::new())
}

/// The block-start hook: executes every proposal whose timelock has ended (each in its own
/// call, so one failing changes nothing and does not stop the others) and settles the deposits
/// of proposals that can no longer pass. A cursor skips the proposals already final.
fn execute_ready(host: &mut dyn ModuleHost, call: &CallContext<'_>) -> Result<Bytes, ModuleError> {
    let count = load_u64(host, count_slot())?;
    let mut cursor = load_u64(host, cursor_slot())?.max(1);
    let first = cursor;
    let mut id = cursor;
    while id <= count && id < first + AUTO_SCAN {
        let mut p = Proposal::load(host, id)?;
        let state = p.state(call.block_number);
        let done = match state {
            ProposalState::Executed => true,
            ProposalState::Defeated | ProposalState::Vetoed => {
                if p.flags & FLAG_DEPOSIT_SETTLED == 0 {
                    p.settle_deposit(host, call.block_number)?;
                }
                true
            }
            ProposalState::Executable if p.flags & FLAG_AUTO_FAILED != 0 => true,
            ProposalState::Executable => {
                let execute = I::executeCall { proposalId: id }.abi_encode();
                match host.call_module(GOVERNANCE, &execute) {
                    Ok(_) => true,
                    Err(ModuleError::Revert(reason)) => {
                        p.flags |= FLAG_AUTO_FAILED;
                        store_u64(host, field(proposal(id), P_FLAGS), p.flags)?;
                        emit(
                            host,
                            I::AutoExecutionFailed {
                                proposalId: id,
                                reason,
                            },
                        )?;
                        true
                    }
                    Err(e) => return Err(e),
                }
            }
            ProposalState::Active | ProposalState::Queued => false,
        };
        if done && id == cursor {
            cursor += 1;
        }
        id += 1;
    }
    if cursor != first {
        store_u64(host, cursor_slot(), cursor)?;
    }
    Ok(Bytes::new())
}

pub struct Governance;

impl Module for Governance {
    fn address(&self) -> Address {
        GOVERNANCE
    }

    fn name(&self) -> &'static str {
        "Governance"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        let selector = selector(call, self.name())?;
        if selector != I::proposeCall::SELECTOR && selector != I::proposeRemovalCall::SELECTOR {
            non_payable(call)?;
        }
        let input = call.input;
        match selector {
            I::proposeCall::SELECTOR => {
                let a = decode::<I::proposeCall>(self.name(), input)?;
                propose(host, call, a)
            }
            I::proposeRemovalCall::SELECTOR => {
                let a = decode::<I::proposeRemovalCall>(self.name(), input)?;
                if a.contributionIds.is_empty() || a.contributionIds.len() > MAX_ACTIONS {
                    return Err(invalid("remove 1 to 16 contributions"));
                }
                let mut seen = std::collections::BTreeSet::new();
                for &id in &a.contributionIds {
                    let accepted = contribution_payees(host, id)?.is_some_and(|p| p.accepted);
                    if !accepted || !seen.insert(id) {
                        return Err(invalid(format!(
                            "contribution {id} is not an accepted contribution (or is named twice)"
                        )));
                    }
                }
                let made = propose(
                    host,
                    call,
                    I::proposeCall {
                        description: a.description,
                        paramNames: vec![],
                        paramValues: vec![],
                        spendTo: vec![],
                        spendAmounts: vec![],
                        slashAccounts: vec![],
                    },
                )?;
                let id = load_u64(host, count_slot())?;
                store_u64(
                    host,
                    field(proposal(id), P_REMOVALS),
                    a.contributionIds.len() as u64,
                )?;
                for (i, &c) in a.contributionIds.iter().enumerate() {
                    store_u64(host, action("proposal.remove", id, i as u64), c)?;
                }
                Ok(made)
            }
            I::proposalRemovalsCall::SELECTOR => {
                let a = decode::<I::proposalRemovalsCall>(self.name(), input)?;
                let id = Proposal::load(host, a.proposalId)?.id;
                let n = load_u64(host, field(proposal(id), P_REMOVALS))?;
                let mut ids = Vec::with_capacity(n as usize);
                for i in 0..n {
                    ids.push(load_u64(host, action("proposal.remove", id, i))?);
                }
                Ok(I::proposalRemovalsCall::abi_encode_returns(&ids).into())
            }
            I::voteCall::SELECTOR => {
                let a = decode::<I::voteCall>(self.name(), input)?;
                vote(host, call, a)
            }
            I::executeCall::SELECTOR => {
                let a = decode::<I::executeCall>(self.name(), input)?;
                execute(host, call, a.proposalId)
            }
            I::executeReadyCall::SELECTOR => {
                if call.caller != SYSTEM {
                    return Err(ModuleError::revert(I::NotSystem {
                        caller: call.caller,
                    }));
                }
                execute_ready(host, call)
            }
            I::settleDepositCall::SELECTOR => {
                let a = decode::<I::settleDepositCall>(self.name(), input)?;
                let mut p = Proposal::load(host, a.proposalId)?;
                if call.block_number <= p.end {
                    return Err(ModuleError::revert(I::VotingNotEnded {
                        proposalId: p.id,
                        endBlock: p.end,
                    }));
                }
                if p.flags & FLAG_DEPOSIT_SETTLED != 0 {
                    return Err(ModuleError::revert(I::DepositAlreadySettled {
                        proposalId: p.id,
                    }));
                }
                p.settle_deposit(host, call.block_number)?;
                Ok(Bytes::new())
            }
            I::proposalCountCall::SELECTOR => {
                Ok(encode_u256(U256::from(load_u64(host, count_slot())?)))
            }
            I::getProposalCall::SELECTOR => {
                let a = decode::<I::getProposalCall>(self.name(), input)?;
                let p = Proposal::load(host, a.proposalId)?;
                let out = I::getProposalReturn {
                    proposer: p.proposer,
                    description: load_string(host, field(proposal(p.id), P_DESCRIPTION))?,
                    state: p.state(call.block_number) as u8,
                    snapshotBlock: p.snapshot,
                    endBlock: p.end,
                    executableBlock: p.executable_block(),
                    forVotes: p.tally[FOR as usize],
                    againstVotes: p.tally[AGAINST as usize],
                    abstainVotes: p.tally[ABSTAIN as usize],
                    vetoVotes: p.tally[VETO as usize],
                    quorumVotes: p.quorum_votes(),
                    deposit: p.deposit,
                };
                Ok(I::getProposalCall::abi_encode_returns(&out).into())
            }
            I::proposalActionsCall::SELECTOR => {
                let a = decode::<I::proposalActionsCall>(self.name(), input)?;
                let id = Proposal::load(host, a.proposalId)?.id;
                let base = proposal(id);
                let mut out = I::proposalActionsReturn {
                    paramNames: vec![],
                    paramValues: vec![],
                    spendTo: vec![],
                    spendAmounts: vec![],
                    slashAccounts: vec![],
                };
                for i in 0..load_u64(host, field(base, P_PARAMS))? {
                    let a = action("proposal.param", id, i);
                    out.paramNames.push(load_string(host, a)?);
                    out.paramValues.push(host.sload(field(a, 1))?);
                }
                for i in 0..load_u64(host, field(base, P_SPENDS))? {
                    let a = action("proposal.spend", id, i);
                    out.spendTo.push(load_address(host, field(a, 0))?);
                    out.spendAmounts.push(host.sload(field(a, 1))?);
                }
                for i in 0..load_u64(host, field(base, P_SLASHES))? {
                    out.slashAccounts
                        .push(load_address(host, action("proposal.slash", id, i))?);
                }
                Ok(I::proposalActionsCall::abi_encode_returns(&out).into())
            }
            I::getVoteCall::SELECTOR => {
                let a = decode::<I::getVoteCall>(self.name(), input)?;
                let id = Proposal::load(host, a.proposalId)?.id;
                let v = vote_slot(id, a.voter);
                let stored = load_u64(host, field(v, 0))?;
                let out = I::getVoteReturn {
                    voted: stored != 0,
                    support: stored.saturating_sub(1) as u8,
                    weight: host.sload(field(v, 1))?,
                };
                Ok(I::getVoteCall::abi_encode_returns(&out).into())
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol_params::{
        self, SETTLEMENT_CONTRIBUTORS_BPS, SETTLEMENT_MODEL_OWNER_BPS, SETTLEMENT_TREASURY_BPS,
        SETTLEMENT_VALIDATORS_BPS, STAKING_BLOCK_FEE_SHARE_BPS, STAKING_SLASH_BPS,
        STAKING_UNBONDING_BLOCKS,
    };
    use super::super::test_chain::{Chain, reverted_with};
    use super::*;
    use crate::genesis::Genesis;
    use crate::test_utils::key;
    use alloy_signer_local::PrivateKeySigner;
    use openledger_primitives::B256;
    use openledger_primitives::units::ONE_OPEN;

    fn open(n: u64) -> U256 {
        ONE_OPEN * U256::from(n)
    }

    const DEPOSIT: u64 = 10;
    const PERIOD: u64 = 10;
    const TIMELOCK: u64 = 3;

    /// Accounts 0..5 with 10,000 OPEN; 0, 1, 2 stake 100, 200, 300 OPEN in block 1; the
    /// calls that follow run in block 2.
    fn chain() -> Chain {
        let genesis = Genesis {
            alloc: (0..6).map(|i| (key(i).address(), open(10_000))).collect(),
            params: vec![
                (GOVERNANCE_DEPOSIT.into(), open(DEPOSIT)),
                (GOVERNANCE_VOTING_PERIOD_BLOCKS.into(), U256::from(PERIOD)),
                (GOVERNANCE_TIMELOCK_BLOCKS.into(), U256::from(TIMELOCK)),
                (STAKING_UNBONDING_BLOCKS.into(), U256::from(100)),
                // Block fees stay with the treasury, so balances here are exact.
                (STAKING_BLOCK_FEE_SHARE_BPS.into(), U256::ZERO),
            ],
            ..Default::default()
        };
        let mut c = Chain::with_genesis(GOVERNANCE, &genesis);
        for (i, amount) in [(0, 100), (1, 200), (2, 300)] {
            let tx = c.send_to(
                STAKING,
                &key(i),
                IStaking::stakeCall {}.abi_encode(),
                open(amount),
            );
            assert!(tx.success, "{:?}", tx.output);
        }
        c.advance(1);
        c
    }

    fn propose_params(params: &[(&str, u64)]) -> Vec<u8> {
        I::proposeCall {
            description: "change parameters".into(),
            paramNames: params.iter().map(|(n, _)| n.to_string()).collect(),
            paramValues: params.iter().map(|(_, v)| U256::from(*v)).collect(),
            spendTo: vec![],
            spendAmounts: vec![],
            slashAccounts: vec![],
        }
        .abi_encode()
    }

    const NEW_SPLIT: [(&str, u64); 4] = [
        (SETTLEMENT_CONTRIBUTORS_BPS, 6_000),
        (SETTLEMENT_VALIDATORS_BPS, 2_000),
        (SETTLEMENT_MODEL_OWNER_BPS, 1_500),
        (SETTLEMENT_TREASURY_BPS, 500),
    ];

    fn propose(c: &mut Chain, who: &PrivateKeySigner, data: Vec<u8>) -> u64 {
        let tx = c.send(who, data, open(DEPOSIT));
        assert!(tx.success, "{:?}", tx.output);
        U256::from_be_slice(&tx.output).saturating_to()
    }

    fn vote(c: &mut Chain, who: &PrivateKeySigner, id: u64, support: u8) -> ExecutedTxAlias {
        c.send(
            who,
            I::voteCall {
                proposalId: id,
                support,
            }
            .abi_encode(),
            U256::ZERO,
        )
    }

    type ExecutedTxAlias = crate::executor::ExecutedTx;

    fn execute(c: &mut Chain, who: &PrivateKeySigner, id: u64) -> ExecutedTxAlias {
        c.send(
            who,
            I::executeCall { proposalId: id }.abi_encode(),
            U256::ZERO,
        )
    }

    /// Seals the next block with one plain transfer: the block-start hook runs before it.
    fn tick(c: &mut Chain) -> ExecutedTxAlias {
        let who = key(4);
        let tx = c.send_to(who.address(), &who, vec![], U256::ZERO);
        assert!(tx.success);
        tx
    }

    fn get(c: &Chain, id: u64) -> I::getProposalReturn {
        I::getProposalCall::abi_decode_returns(
            &c.view(I::getProposalCall { proposalId: id }.abi_encode()),
        )
        .unwrap()
    }

    fn param(c: &Chain, name: &str) -> U256 {
        protocol_params::read(&c.state, name).unwrap()
    }

    fn supply(c: &Chain) -> U256 {
        c.state.accounts.values().map(|a| a.balance).sum()
    }

    #[test]
    fn a_fee_split_proposal_passes_waits_out_the_timelock_and_applies() {
        let (a, b, cc, outsider) = (key(0), key(1), key(2), key(4));
        let mut c = chain();
        let supply_before = supply(&c);
        let before = c.balance(a.address());
        let id = propose(&mut c, &a, propose_params(&NEW_SPLIT));
        assert_eq!(id, 1);
        let p = get(&c, id);
        assert_eq!(p.state, ProposalState::Active as u8);
        assert_eq!(
            (p.snapshotBlock, p.endBlock, p.executableBlock),
            (1, 2 + PERIOD, 2 + PERIOD + TIMELOCK + 1)
        );
        // 33.4% of 600 staked OPEN must vote.
        assert_eq!(
            p.quorumVotes,
            open(600) * U256::from(3_340) / U256::from(10_000)
        );

        assert!(vote(&mut c, &b, id, FOR).success);
        assert!(vote(&mut c, &a, id, AGAINST).success);
        let outsider_vote = vote(&mut c, &outsider, id, FOR);
        assert_eq!(
            reverted_with::<I::NoVotingPower>(&outsider_vote).voter,
            outsider.address()
        );
        let too_early = execute(&mut c, &a, id);
        assert_eq!(
            reverted_with::<I::NotExecutable>(&too_early).state,
            ProposalState::Active as u8
        );
        c.advance(PERIOD);
        assert!(
            vote(&mut c, &cc, id, ABSTAIN).success,
            "the end block still takes votes"
        );
        let p = get(&c, id);
        assert_eq!(
            (p.forVotes, p.againstVotes, p.abstainVotes, p.vetoVotes),
            (open(200), open(100), open(300), U256::ZERO)
        );

        c.advance(1);
        let late = vote(&mut c, &cc, id, FOR);
        assert_eq!(reverted_with::<I::VotingClosed>(&late).endBlock, 2 + PERIOD);
        assert_eq!(get(&c, id).state, ProposalState::Queued as u8);
        let queued = execute(&mut c, &b, id);
        assert_eq!(
            reverted_with::<I::NotExecutable>(&queued).state,
            ProposalState::Queued as u8
        );
        assert_eq!(
            param(&c, SETTLEMENT_CONTRIBUTORS_BPS),
            U256::from(7_000),
            "not yet"
        );

        c.advance(TIMELOCK);
        assert_eq!(get(&c, id).state, ProposalState::Executable as u8);
        // Nobody calls `execute`: the chain runs it at the start of the next block.
        tick(&mut c);
        let split = FeeSplit::read(&c.state).unwrap();
        assert_eq!(
            split,
            FeeSplit {
                contributors_bps: 6_000,
                validators_bps: 2_000,
                model_owner_bps: 1_500,
                treasury_bps: 500
            }
        );
        assert_eq!(get(&c, id).state, ProposalState::Executed as u8);
        let twice = execute(&mut c, &b, id);
        assert_eq!(
            reverted_with::<I::NotExecutable>(&twice).state,
            ProposalState::Executed as u8
        );

        // The deposit came back: the proposer paid only gas.
        assert!(before - c.balance(a.address()) < open(1) / U256::from(100));
        assert_eq!(c.balance(GOVERNANCE), U256::ZERO);
        assert_eq!(
            supply(&c),
            supply_before,
            "governance moves OPEN, never makes it"
        );
        let shares = split.split(U256::from(1_001));
        assert_eq!(
            shares.contributors + shares.validators + shares.model_owner + shares.treasury,
            U256::from(1_001)
        );
    }

    #[test]
    fn out_of_range_proposals_revert_with_readable_reasons() {
        let a = key(0);
        let mut c = chain();
        let mut bad_split = NEW_SPLIT;
        bad_split[0].1 = 6_500;
        let tx = c.send(&a, propose_params(&bad_split), open(DEPOSIT));
        assert_eq!(
            reverted_with::<I::FeeSplitNotWhole>(&tx).sumBps,
            U256::from(10_500)
        );
        // One share alone also breaks the sum with the others as they are.
        let tx = c.send(
            &a,
            propose_params(&[(SETTLEMENT_TREASURY_BPS, 400)]),
            open(DEPOSIT),
        );
        assert_eq!(
            reverted_with::<I::FeeSplitNotWhole>(&tx).sumBps,
            U256::from(9_900)
        );

        let tx = c.send(
            &a,
            propose_params(&[(GOVERNANCE_VOTING_PERIOD_BLOCKS, 0)]),
            open(DEPOSIT),
        );
        let e = reverted_with::<I::ParamOutOfRange>(&tx);
        assert_eq!(
            (e.name.as_str(), e.value, e.min),
            (GOVERNANCE_VOTING_PERIOD_BLOCKS, U256::ZERO, U256::from(10))
        );
        let tx = c.send(&a, propose_params(&[("no.such_param", 1)]), open(DEPOSIT));
        assert_eq!(reverted_with::<I::UnknownParam>(&tx).name, "no.such_param");
        let tx = c.send(
            &a,
            propose_params(&[(STAKING_SLASH_BPS, 10), (STAKING_SLASH_BPS, 20)]),
            open(DEPOSIT),
        );
        assert_eq!(
            reverted_with::<I::DuplicateParam>(&tx).name,
            STAKING_SLASH_BPS
        );
        let tx = c.send(&a, propose_params(&[(STAKING_SLASH_BPS, 10)]), open(1));
        let e = reverted_with::<I::WrongDeposit>(&tx);
        assert_eq!((e.required, e.paid), (open(DEPOSIT), open(1)));
        let mismatched = I::proposeCall {
            description: "x".into(),
            paramNames: vec![STAKING_SLASH_BPS.into()],
            paramValues: vec![],
            spendTo: vec![],
            spendAmounts: vec![],
            slashAccounts: vec![],
        };
        let tx = c.send(&a, mismatched.abi_encode(), open(DEPOSIT));
        reverted_with::<I::InvalidProposal>(&tx);
        let count = c.view(I::proposalCountCall {}.abi_encode());
        assert_eq!(
            U256::from_be_slice(&count),
            U256::ZERO,
            "nothing was recorded"
        );
        assert_eq!(
            c.balance(GOVERNANCE),
            U256::ZERO,
            "every deposit went back with the revert"
        );
    }

    #[test]
    fn votes_weigh_snapshot_power_once_and_can_change_until_the_end() {
        let (a, b, newcomer) = (key(0), key(1), key(3));
        let mut c = chain();
        let id = propose(&mut c, &a, propose_params(&[(STAKING_SLASH_BPS, 1_000)]));
        // Stake moved after the snapshot changes nothing.
        let more = c.send_to(
            STAKING,
            &a,
            IStaking::stakeCall {}.abi_encode(),
            open(1_000),
        );
        assert!(more.success);
        let joined = c.send_to(
            STAKING,
            &newcomer,
            IStaking::stakeCall {}.abi_encode(),
            open(1_000),
        );
        assert!(joined.success);
        let delegated = c.send_to(
            STAKING,
            &b,
            IStaking::delegateCall { to: a.address() }.abi_encode(),
            U256::ZERO,
        );
        assert!(delegated.success);
        c.advance(1);

        assert!(vote(&mut c, &a, id, FOR).success);
        assert!(
            vote(&mut c, &b, id, FOR).success,
            "b had its power at the snapshot"
        );
        let p = get(&c, id);
        assert_eq!(
            p.forVotes,
            open(300),
            "100 + 200, not a's or b's later stake"
        );
        let newcomer_vote = vote(&mut c, &newcomer, id, FOR);
        assert_eq!(
            reverted_with::<I::NoVotingPower>(&newcomer_vote).snapshotBlock,
            1
        );

        let twice = vote(&mut c, &a, id, FOR);
        assert_eq!(reverted_with::<I::AlreadyVoted>(&twice).support, FOR);
        let changed = vote(&mut c, &a, id, VETO);
        assert!(changed.success);
        let p = get(&c, id);
        assert_eq!((p.forVotes, p.vetoVotes), (open(200), open(100)));
        let v = I::getVoteCall::abi_decode_returns(
            &c.view(
                I::getVoteCall {
                    proposalId: id,
                    voter: a.address(),
                }
                .abi_encode(),
            ),
        )
        .unwrap();
        assert_eq!((v.voted, v.support, v.weight), (true, VETO, open(100)));
        let bad = vote(&mut c, &a, id, 4);
        assert_eq!(reverted_with::<I::InvalidSupport>(&bad).support, 4);
        let unknown = vote(&mut c, &a, 9, FOR);
        assert_eq!(reverted_with::<I::UnknownProposal>(&unknown).proposalId, 9);
    }

    #[test]
    fn a_failed_execution_changes_nothing() {
        let (a, b, cc, payee) = (key(0), key(1), key(2), key(5));
        let mut c = chain();
        // Sets a parameter and pays more than the treasury holds.
        let data = I::proposeCall {
            description: "raise the slash and pay a grant".into(),
            paramNames: vec![STAKING_SLASH_BPS.into()],
            paramValues: vec![U256::from(2_000)],
            spendTo: vec![payee.address()],
            spendAmounts: vec![open(1_000_000)],
            slashAccounts: vec![],
        };
        let id = propose(&mut c, &a, data.abi_encode());
        for v in [&a, &b, &cc] {
            assert!(vote(&mut c, v, id, FOR).success);
        }
        c.advance(PERIOD + TIMELOCK + 1);
        // The chain's own attempt at the block start fails and changes nothing but the
        // proposal's record of it; the proposal stays executable by hand.
        tick(&mut c);
        assert_eq!(param(&c, STAKING_SLASH_BPS), U256::from(500));
        assert_eq!(get(&c, id).state, ProposalState::Executable as u8);
        let state_before = c.state.clone();
        let failed = execute(&mut c, &b, id);
        let e = reverted_with::<I::TreasuryInsufficient>(&failed);
        assert_eq!(e.needed, open(1_000_000));
        assert_eq!(
            param(&c, STAKING_SLASH_BPS),
            U256::from(500),
            "the parameter did not change"
        );
        assert_eq!(
            get(&c, id).state,
            ProposalState::Executable as u8,
            "still executable"
        );
        assert_eq!(
            c.balance(GOVERNANCE),
            open(DEPOSIT),
            "the deposit is still held"
        );
        for (address, account) in &state_before.accounts {
            if *address != b.address()
                && *address != TREASURY
                && *address != Address::repeat_byte(0xbe)
            {
                assert_eq!(
                    c.state.accounts.get(address),
                    Some(account),
                    "{address} changed"
                );
            }
        }
        assert_eq!(
            state_before.storage, c.state.storage,
            "no storage word changed"
        );
    }

    #[test]
    fn a_fee_split_broken_by_an_earlier_proposal_fails_at_execution() {
        let (a, b, cc) = (key(0), key(1), key(2));
        let mut c = chain();
        let first = propose(&mut c, &a, propose_params(&NEW_SPLIT));
        let second = propose(
            &mut c,
            &a,
            // Whole against the split of today: 7,500 + 1,000 + 1,500 + 0.
            propose_params(&[
                (SETTLEMENT_CONTRIBUTORS_BPS, 7_500),
                (SETTLEMENT_TREASURY_BPS, 0),
            ]),
        );
        for id in [first, second] {
            for v in [&a, &b, &cc] {
                assert!(vote(&mut c, v, id, FOR).success);
            }
        }
        c.advance(PERIOD + TIMELOCK + 1);
        // Both are due in the same block: the first applies, the second fails alone.
        tick(&mut c);
        assert_eq!(get(&c, first).state, ProposalState::Executed as u8);
        assert_eq!(get(&c, second).state, ProposalState::Executable as u8);
        let broken = execute(&mut c, &b, second);
        assert_eq!(
            reverted_with::<I::FeeSplitNotWhole>(&broken).sumBps,
            U256::from(11_000)
        );
        assert_eq!(param(&c, SETTLEMENT_CONTRIBUTORS_BPS), U256::from(6_000));
        assert_eq!(param(&c, SETTLEMENT_TREASURY_BPS), U256::from(500));
    }

    #[test]
    fn vetoed_proposals_forfeit_their_deposit_and_defeated_ones_get_it_back() {
        let (a, b, cc) = (key(0), key(1), key(2));
        let mut c = chain();
        let vetoed = propose(&mut c, &a, propose_params(&[(STAKING_SLASH_BPS, 1_000)]));
        let ignored = propose(&mut c, &b, propose_params(&[(STAKING_SLASH_BPS, 1_000)]));
        assert!(vote(&mut c, &a, vetoed, FOR).success);
        assert!(vote(&mut c, &b, vetoed, FOR).success);
        assert!(vote(&mut c, &cc, vetoed, VETO).success);
        let early = c.send(
            &a,
            I::settleDepositCall { proposalId: vetoed }.abi_encode(),
            U256::ZERO,
        );
        reverted_with::<I::VotingNotEnded>(&early);
        c.advance(PERIOD + TIMELOCK + 1);
        assert_eq!(get(&c, vetoed).state, ProposalState::Vetoed as u8);
        assert_eq!(
            get(&c, ignored).state,
            ProposalState::Defeated as u8,
            "no quorum"
        );
        // The next block settles both deposits by itself: forfeited, refunded.
        let treasury = c.balance(TREASURY);
        let b_before = c.balance(b.address());
        let block = tick(&mut c);
        let base_fee = U256::from(block.gas_used); // base fee is 1 wei per gas in tests
        assert_eq!(c.balance(TREASURY), treasury + open(DEPOSIT) + base_fee);
        assert_eq!(c.balance(b.address()), b_before + open(DEPOSIT));
        let refused = execute(&mut c, &a, vetoed);
        assert_eq!(
            reverted_with::<I::NotExecutable>(&refused).state,
            ProposalState::Vetoed as u8
        );
        let twice = c.send(
            &cc,
            I::settleDepositCall {
                proposalId: ignored,
            }
            .abi_encode(),
            U256::ZERO,
        );
        reverted_with::<I::DepositAlreadySettled>(&twice);
        assert_eq!(c.balance(GOVERNANCE), U256::ZERO);
    }

    #[test]
    fn governance_slashes_stake_and_spends_the_treasury() {
        let (a, b, cc, payee) = (key(0), key(1), key(2), key(5));
        let mut c = chain();
        // The curator tries to leave with part of its stake before the vote ends.
        let unstake = c.send_to(
            STAKING,
            &a,
            IStaking::unstakeCall { amount: open(40) }.abi_encode(),
            U256::ZERO,
        );
        assert!(unstake.success);
        // Fund the treasury the way base fees and forfeits do: plain transfers.
        let fund = c.send_to(TREASURY, &cc, vec![], open(50));
        assert!(fund.success);
        let data = I::proposeCall {
            description: "slash a fraudulent curator, pay a grant".into(),
            paramNames: vec![],
            paramValues: vec![],
            spendTo: vec![payee.address()],
            spendAmounts: vec![open(20)],
            slashAccounts: vec![a.address()],
        };
        let id = propose(&mut c, &b, data.abi_encode());
        assert!(vote(&mut c, &b, id, FOR).success);
        assert!(vote(&mut c, &cc, id, FOR).success);
        c.advance(PERIOD + TIMELOCK + 1);
        let treasury = c.balance(TREASURY);
        let payee_before = c.balance(payee.address());
        let supply_before = supply(&c);
        let done = tick(&mut c);
        assert_eq!(get(&c, id).state, ProposalState::Executed as u8);
        // 5% of 60 bonded and of 40 unbonding.
        let s = IStaking::stakeOfCall::abi_decode_returns(
            &c.view_to(
                STAKING,
                IStaking::stakeOfCall {
                    account: a.address(),
                }
                .abi_encode(),
            ),
        )
        .unwrap();
        assert_eq!((s.staked, s.unbonding), (open(57), open(38)));
        let base_fee = U256::from(done.gas_used);
        assert_eq!(
            c.balance(TREASURY),
            treasury + open(5) - open(20) + base_fee
        );
        assert_eq!(c.balance(payee.address()), payee_before + open(20));
        assert_eq!(supply(&c), supply_before);
        let power = c.view_to(
            STAKING,
            IStaking::votingPowerCall {
                account: a.address(),
            }
            .abi_encode(),
        );
        assert_eq!(U256::from_be_slice(&power), open(57));
    }

    #[test]
    fn only_the_chain_runs_the_block_hook_and_the_system_account_leaves_no_trace() {
        let a = key(0);
        let mut c = chain();
        let forged = c.send(&a, I::executeReadyCall {}.abi_encode(), U256::ZERO);
        assert_eq!(reverted_with::<I::NotSystem>(&forged).caller, a.address());
        tick(&mut c);
        assert!(
            !c.state.accounts.contains_key(&SYSTEM),
            "the hook's caller is not an account"
        );
    }

    #[test]
    fn fraud_removal_stops_a_rows_pay_and_slashes_the_curators_who_accepted_it() {
        use super::super::datanets::STATUS_REMOVED;
        let (a, b, cc, owner, contributor) = (key(0), key(1), key(2), key(3), key(4));
        let mut c = chain();
        // cc curates a datanet and accepts a contribution.
        let create = IDatanets::createDatanetCall {
            name: "facts".into(),
            descriptionHash: B256::repeat_byte(1),
            license: "CC-BY-4.0".into(),
            schema: 1,
            permissioned: false,
            allowlistOnly: false,
            reviewQuorum: 1,
            curators: vec![cc.address()],
        };
        assert!(
            c.send_to(DATANETS, &owner, create.abi_encode(), open(10))
                .success
        );
        let contribute = IDatanets::contributeCall {
            datanetId: 1,
            contentRoot: B256::repeat_byte(2),
            rowCount: 3,
            byteCount: 30,
        };
        assert!(
            c.send_to(DATANETS, &contributor, contribute.abi_encode(), U256::ZERO)
                .success
        );
        let review = IDatanets::reviewCall {
            contributionId: 1,
            accept: true,
            reasonCode: 0,
        };
        assert!(
            c.send_to(DATANETS, &cc, review.abi_encode(), U256::ZERO)
                .success
        );

        // Only governance removes rows; only accepted contributions can be proposed.
        let direct = c.send_to(
            DATANETS,
            &a,
            IDatanets::removeForFraudCall { contributionId: 1 }.abi_encode(),
            U256::ZERO,
        );
        assert_eq!(
            reverted_with::<IDatanets::NotGovernance>(&direct).caller,
            a.address()
        );
        let remove = |ids: Vec<u64>| {
            I::proposeRemovalCall {
                description: "row 1 was copied from a paywalled source".into(),
                contributionIds: ids,
            }
            .abi_encode()
        };
        let bad = c.send(&a, remove(vec![7]), open(DEPOSIT));
        reverted_with::<I::InvalidProposal>(&bad);
        let id = propose(&mut c, &a, remove(vec![1]));
        let listed = I::proposalRemovalsCall::abi_decode_returns(
            &c.view(I::proposalRemovalsCall { proposalId: id }.abi_encode()),
        )
        .unwrap();
        assert_eq!(listed, vec![1]);
        for v in [&a, &b, &cc] {
            assert!(vote(&mut c, v, id, FOR).success);
        }
        c.advance(PERIOD + TIMELOCK + 1);
        let treasury = c.balance(TREASURY);
        let block = tick(&mut c);
        assert_eq!(get(&c, id).state, ProposalState::Executed as u8);
        let row = IDatanets::getContributionCall::abi_decode_returns(&c.view_to(
            DATANETS,
            IDatanets::getContributionCall { contributionId: 1 }.abi_encode(),
        ))
        .unwrap();
        assert_eq!(row.status, STATUS_REMOVED);
        let s = IStaking::stakeOfCall::abi_decode_returns(
            &c.view_to(
                STAKING,
                IStaking::stakeOfCall {
                    account: cc.address(),
                }
                .abi_encode(),
            ),
        )
        .unwrap();
        assert_eq!(s.staked, open(285), "5% of the curator's 300");
        assert_eq!(
            c.balance(TREASURY),
            treasury + open(15) + U256::from(block.gas_used)
        );
    }

    #[test]
    fn only_governance_holds_the_treasury_and_parameters() {
        let a = key(0);
        let mut c = chain();
        let set = IProtocolParams::setCall {
            name: STAKING_SLASH_BPS.into(),
            value: U256::from(1),
        };
        let tx = c.send_to(PROTOCOL_PARAMS, &a, set.abi_encode(), U256::ZERO);
        assert_eq!(
            reverted_with::<IProtocolParams::NotGovernance>(&tx).caller,
            a.address()
        );
        let paid_vote = c.send(
            &a,
            I::voteCall {
                proposalId: 1,
                support: FOR,
            }
            .abi_encode(),
            U256::from(1),
        );
        assert!(!paid_vote.success, "vote is not payable");
    }
}
