//! `Staking`: staked OPEN, unbonding, delegation, rewards and voting power (precompile at
//! [`STAKING`]).
//!
//! The module's balance holds every bonded and unbonding stake plus the unclaimed rewards, so
//! staking moves OPEN but never creates or destroys it; only a governance slash sends some to
//! the treasury.
//!
//! - **Rewards** use the reward-per-token accumulator: `fundRewards` adds
//!   `amount · 10¹⁸ / totalStaked` to one number, and each staker's share is settled lazily from
//!   the difference to the value it last saw, so funding and claiming cost O(1) whatever the
//!   number of stakers. The division's remainder is carried to the next funding, so no wei is
//!   stranded by rounding beyond the per-staker floor.
//! - **Voting power** (own stake unless delegated away, plus stake delegated in) is kept as
//!   checkpoints `(block, power)` per account and for the total; a read at a past block is a
//!   binary search, and writes in the same block overwrite the block's checkpoint. Governance
//!   reads them with [`power_at`] and [`total_at`].
//! - **Unbonding** requests form a per-account queue (at most [`MAX_UNBONDING`] pending);
//!   `withdraw` pays the matured ones from the head.

use super::protocol_params::{
    BPS, ProtocolParams, STAKING_BLOCK_FEE_SHARE_BPS, STAKING_SLASH_BPS, STAKING_UNBONDING_BLOCKS,
};
use super::storage::{field, load_address, load_u64, slot, store_address, store_u64};
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::addresses::{GOVERNANCE, STAKING, SYSTEM, TREASURY};
use openledger_primitives::{Address, Bytes, U256};

mod abi {
    alloy_sol_types::sol!("solidity/IStaking.sol");
}
pub use abi::IStaking;
use abi::IStaking as I;

/// Fixed-point scale of the reward accumulator.
pub const REWARD_SCALE: u64 = 1_000_000_000_000_000_000;
/// Pending unbonding requests one account may have.
pub const MAX_UNBONDING: u64 = 32;

// Staker record fields.
const S_STAKED: u64 = 0;
const S_DELEGATEE: u64 = 1;
const S_REWARD_SEEN: u64 = 2;
const S_REWARD_OWED: u64 = 3;
const S_UNBOND_HEAD: u64 = 4;
const S_UNBOND_TAIL: u64 = 5;
const S_UNBONDING: u64 = 6;

// Unbonding request fields.
const U_AMOUNT: u64 = 0;
const U_RELEASE: u64 = 1;

fn staker(who: Address) -> U256 {
    slot("staker", &[who.as_slice()])
}

fn unbond(who: Address, index: u64) -> U256 {
    slot("unbond", &[who.as_slice(), &index.to_be_bytes()])
}

fn total_slot() -> U256 {
    slot("staking.total", &[])
}

fn reward_per_token_slot() -> U256 {
    slot("rewards.per_token", &[])
}

fn reward_remainder_slot() -> U256 {
    slot("rewards.remainder", &[])
}

/// Checkpoint series: `None` is the total stake, `Some(a)` the voting power of `a`.
fn checkpoint_count(series: Option<Address>) -> U256 {
    match series {
        None => slot("power.total.count", &[]),
        Some(a) => slot("power.count", &[a.as_slice()]),
    }
}

fn checkpoint(series: Option<Address>, index: u64) -> U256 {
    match series {
        None => slot("power.total", &[&index.to_be_bytes()]),
        Some(a) => slot("power", &[a.as_slice(), &index.to_be_bytes()]),
    }
}

/// A checkpoint word: the block in the top 64 bits, the value in the low 192 (more than all
/// OPEN there can be).
fn pack(block: u64, value: U256) -> U256 {
    (U256::from(block) << 192) | value
}

fn unpack(word: U256) -> (u64, U256) {
    let block: u64 = (word >> 192usize).saturating_to();
    (block, word & ((U256::from(1) << 192) - U256::from(1)))
}

/// Reads `series` at the end of `block` (Staking's storage, from any module).
fn series_at(
    host: &mut dyn ModuleHost,
    series: Option<Address>,
    block: u64,
) -> Result<U256, ModuleError> {
    let n: u64 = host
        .sload_at(STAKING, checkpoint_count(series))?
        .saturating_to();
    // The first checkpoint after `block`, by binary search; the answer is the one before it.
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (b, _) = unpack(host.sload_at(STAKING, checkpoint(series, mid))?);
        if b > block {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo == 0 {
        return Ok(U256::ZERO);
    }
    Ok(unpack(host.sload_at(STAKING, checkpoint(series, lo - 1))?).1)
}

fn series_latest(host: &mut dyn ModuleHost, series: Option<Address>) -> Result<U256, ModuleError> {
    series_at(host, series, u64::MAX)
}

/// `account`'s voting power at the end of `block`.
pub fn power_at(
    host: &mut dyn ModuleHost,
    account: Address,
    block: u64,
) -> Result<U256, ModuleError> {
    series_at(host, Some(account), block)
}

/// All bonded stake at the end of `block`.
pub fn total_at(host: &mut dyn ModuleHost, block: u64) -> Result<U256, ModuleError> {
    series_at(host, None, block)
}

fn write_series(
    host: &mut dyn ModuleHost,
    series: Option<Address>,
    block: u64,
    value: U256,
) -> Result<(), ModuleError> {
    let n = load_u64(host, checkpoint_count(series))?;
    if n > 0 {
        let (last_block, _) = unpack(host.sload(checkpoint(series, n - 1))?);
        if last_block == block {
            return host.sstore(checkpoint(series, n - 1), pack(block, value));
        }
    }
    host.sstore(checkpoint(series, n), pack(block, value))?;
    store_u64(host, checkpoint_count(series), n + 1)
}

/// Adds `amount` to `to`'s power and takes it from `from`'s (either may be absent).
fn move_power(
    host: &mut dyn ModuleHost,
    block: u64,
    from: Option<Address>,
    to: Option<Address>,
    amount: U256,
) -> Result<(), ModuleError> {
    if amount.is_zero() || from == to {
        return Ok(());
    }
    if let Some(a) = from {
        let old = series_latest(host, Some(a))?;
        let new = old.saturating_sub(amount);
        write_series(host, Some(a), block, new)?;
        emit(
            host,
            I::VotingPowerChanged {
                account: a,
                oldPower: old,
                newPower: new,
            },
        )?;
    }
    if let Some(a) = to {
        let old = series_latest(host, Some(a))?;
        let new = old + amount;
        write_series(host, Some(a), block, new)?;
        emit(
            host,
            I::VotingPowerChanged {
                account: a,
                oldPower: old,
                newPower: new,
            },
        )?;
    }
    Ok(())
}

fn delegatee_of(host: &mut dyn ModuleHost, who: Address) -> Result<Address, ModuleError> {
    let d = load_address(host, field(staker(who), S_DELEGATEE))?;
    Ok(if d.is_zero() { who } else { d })
}

/// Brings `who`'s owed rewards up to the current accumulator.
fn settle(host: &mut dyn ModuleHost, who: Address) -> Result<U256, ModuleError> {
    let s = staker(who);
    let acc = host.sload(reward_per_token_slot())?;
    let seen = host.sload(field(s, S_REWARD_SEEN))?;
    let staked = host.sload(field(s, S_STAKED))?;
    let mut owed = host.sload(field(s, S_REWARD_OWED))?;
    if acc != seen {
        owed += staked * (acc - seen) / U256::from(REWARD_SCALE);
        host.sstore(field(s, S_REWARD_OWED), owed)?;
        host.sstore(field(s, S_REWARD_SEEN), acc)?;
    }
    Ok(owed)
}

/// Changes `who`'s bonded stake by `+add` / `-sub`, with the total, voting power and rewards.
fn change_stake(
    host: &mut dyn ModuleHost,
    block: u64,
    who: Address,
    add: U256,
    sub: U256,
) -> Result<U256, ModuleError> {
    settle(host, who)?;
    let s = staker(who);
    let staked = host.sload(field(s, S_STAKED))?;
    if sub > staked {
        return Err(ModuleError::revert(I::InsufficientStake {
            staked,
            requested: sub,
        }));
    }
    let new = staked + add - sub;
    host.sstore(field(s, S_STAKED), new)?;
    let total = host.sload(total_slot())? + add - sub;
    host.sstore(total_slot(), total)?;
    write_series(host, None, block, total)?;
    let delegatee = delegatee_of(host, who)?;
    if !add.is_zero() {
        move_power(host, block, None, Some(delegatee), add)?;
    }
    if !sub.is_zero() {
        move_power(host, block, Some(delegatee), None, sub)?;
    }
    Ok(new)
}

/// Matured and pending unbonding amounts of `who` at `block`, and the next release block.
struct Unbonding {
    withdrawable: U256,
    pending: U256,
    next_release: u64,
}

fn unbonding(
    host: &mut dyn ModuleHost,
    who: Address,
    block: u64,
) -> Result<Unbonding, ModuleError> {
    let s = staker(who);
    let (head, tail) = (
        load_u64(host, field(s, S_UNBOND_HEAD))?,
        load_u64(host, field(s, S_UNBOND_TAIL))?,
    );
    let mut out = Unbonding {
        withdrawable: U256::ZERO,
        pending: U256::ZERO,
        next_release: 0,
    };
    for i in head..tail {
        let amount = host.sload(field(unbond(who, i), U_AMOUNT))?;
        let release = load_u64(host, field(unbond(who, i), U_RELEASE))?;
        if release <= block {
            out.withdrawable += amount;
        } else {
            out.pending += amount;
            if out.next_release == 0 || release < out.next_release {
                out.next_release = release;
            }
        }
    }
    Ok(out)
}

/// Shares `amount` among the bonded stake (the module must hold or be about to receive it);
/// the new reward per token, or `None` when nobody stakes.
fn add_rewards(host: &mut dyn ModuleHost, amount: U256) -> Result<Option<U256>, ModuleError> {
    let total = host.sload(total_slot())?;
    if total.is_zero() {
        return Ok(None);
    }
    let numerator = amount * U256::from(REWARD_SCALE) + host.sload(reward_remainder_slot())?;
    let acc = host.sload(reward_per_token_slot())? + numerator / total;
    host.sstore(reward_per_token_slot(), acc)?;
    host.sstore(reward_remainder_slot(), numerator % total)?;
    Ok(Some(acc))
}

fn pending_rewards(host: &mut dyn ModuleHost, who: Address) -> Result<U256, ModuleError> {
    let s = staker(who);
    let acc = host.sload(reward_per_token_slot())?;
    let seen = host.sload(field(s, S_REWARD_SEEN))?;
    let staked = host.sload(field(s, S_STAKED))?;
    let owed = host.sload(field(s, S_REWARD_OWED))?;
    Ok(owed + staked * (acc - seen) / U256::from(REWARD_SCALE))
}

fn past_block(call: &CallContext<'_>, block: u64) -> Result<(), ModuleError> {
    if block >= call.block_number {
        return Err(ModuleError::revert(I::FutureBlock {
            blockNumber: block,
            currentBlock: call.block_number,
        }));
    }
    Ok(())
}

pub struct Staking;

impl Module for Staking {
    fn address(&self) -> Address {
        STAKING
    }

    fn name(&self) -> &'static str {
        "Staking"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        let selector = selector(call, self.name())?;
        let payable = matches!(
            selector,
            I::stakeCall::SELECTOR | I::fundRewardsCall::SELECTOR
        );
        if !payable {
            non_payable(call)?;
        }
        let input = call.input;
        let caller = call.caller;
        let block = call.block_number;
        match selector {
            I::stakeCall::SELECTOR => {
                if call.value.is_zero() {
                    return Err(ModuleError::revert(I::ZeroAmount {}));
                }
                let staked = change_stake(host, block, caller, call.value, U256::ZERO)?;
                emit(
                    host,
                    I::Staked {
                        staker: caller,
                        amount: call.value,
                        staked,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::unstakeCall::SELECTOR => {
                let a = decode::<I::unstakeCall>(self.name(), input)?;
                if a.amount.is_zero() {
                    return Err(ModuleError::revert(I::ZeroAmount {}));
                }
                let s = staker(caller);
                let (head, tail) = (
                    load_u64(host, field(s, S_UNBOND_HEAD))?,
                    load_u64(host, field(s, S_UNBOND_TAIL))?,
                );
                if tail - head >= MAX_UNBONDING {
                    return Err(ModuleError::revert(I::TooManyUnbonding {
                        max: MAX_UNBONDING,
                    }));
                }
                change_stake(host, block, caller, U256::ZERO, a.amount)?;
                let period: u64 =
                    ProtocolParams::read_from(host, STAKING_UNBONDING_BLOCKS)?.saturating_to();
                let release = block.saturating_add(period);
                host.sstore(field(unbond(caller, tail), U_AMOUNT), a.amount)?;
                store_u64(host, field(unbond(caller, tail), U_RELEASE), release)?;
                store_u64(host, field(s, S_UNBOND_TAIL), tail + 1)?;
                let unbonding = host.sload(field(s, S_UNBONDING))? + a.amount;
                host.sstore(field(s, S_UNBONDING), unbonding)?;
                emit(
                    host,
                    I::UnstakeRequested {
                        staker: caller,
                        amount: a.amount,
                        releaseBlock: release,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::withdrawCall::SELECTOR => {
                let s = staker(caller);
                let (mut head, tail) = (
                    load_u64(host, field(s, S_UNBOND_HEAD))?,
                    load_u64(host, field(s, S_UNBOND_TAIL))?,
                );
                // Requests mature in order unless the period was shortened since; pay from the
                // head and stop at the first one still bonded.
                let mut amount = U256::ZERO;
                while head < tail {
                    let release = load_u64(host, field(unbond(caller, head), U_RELEASE))?;
                    if release > block {
                        break;
                    }
                    amount += host.sload(field(unbond(caller, head), U_AMOUNT))?;
                    host.sstore(field(unbond(caller, head), U_AMOUNT), U256::ZERO)?;
                    store_u64(host, field(unbond(caller, head), U_RELEASE), 0)?;
                    head += 1;
                }
                if amount.is_zero() {
                    let next = if head < tail {
                        load_u64(host, field(unbond(caller, head), U_RELEASE))?
                    } else {
                        0
                    };
                    return Err(ModuleError::revert(I::NothingToWithdraw {
                        nextReleaseBlock: next,
                    }));
                }
                store_u64(host, field(s, S_UNBOND_HEAD), head)?;
                let unbonding = host.sload(field(s, S_UNBONDING))?.saturating_sub(amount);
                host.sstore(field(s, S_UNBONDING), unbonding)?;
                host.transfer(caller, amount)?;
                emit(
                    host,
                    I::Withdrawn {
                        staker: caller,
                        amount,
                    },
                )?;
                Ok(encode_u256(amount))
            }
            I::delegateCall::SELECTOR => {
                let a = decode::<I::delegateCall>(self.name(), input)?;
                let to = if a.to.is_zero() { caller } else { a.to };
                let from = delegatee_of(host, caller)?;
                if from == to {
                    return Err(ModuleError::revert(I::AlreadyDelegated { delegatee: to }));
                }
                let stored = if to == caller { Address::ZERO } else { to };
                store_address(host, field(staker(caller), S_DELEGATEE), stored)?;
                let amount = host.sload(field(staker(caller), S_STAKED))?;
                move_power(host, block, Some(from), Some(to), amount)?;
                emit(
                    host,
                    I::DelegateChanged {
                        staker: caller,
                        fromDelegate: from,
                        toDelegate: to,
                        amount,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::claimRewardsCall::SELECTOR => {
                let owed = settle(host, caller)?;
                if owed.is_zero() {
                    return Err(ModuleError::revert(I::NothingToClaim {}));
                }
                host.sstore(field(staker(caller), S_REWARD_OWED), U256::ZERO)?;
                host.transfer(caller, owed)?;
                emit(
                    host,
                    I::RewardsClaimed {
                        staker: caller,
                        amount: owed,
                    },
                )?;
                Ok(encode_u256(owed))
            }
            I::fundRewardsCall::SELECTOR => {
                if call.value.is_zero() {
                    return Err(ModuleError::revert(I::ZeroAmount {}));
                }
                let acc =
                    add_rewards(host, call.value)?.ok_or(ModuleError::revert(I::NoStakers {}))?;
                emit(
                    host,
                    I::RewardsFunded {
                        funder: caller,
                        amount: call.value,
                        rewardPerToken: acc,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::accrueBlockRewardsCall::SELECTOR => {
                if caller != SYSTEM {
                    return Err(ModuleError::revert(I::NotSystem { caller }));
                }
                let a = decode::<I::accrueBlockRewardsCall>(self.name(), input)?;
                let bps = ProtocolParams::read_from(host, STAKING_BLOCK_FEE_SHARE_BPS)?;
                let share = a.blockFees * bps / U256::from(BPS);
                if share.is_zero() {
                    return Ok(encode_u256(U256::ZERO));
                }
                match add_rewards(host, share)? {
                    None => Ok(encode_u256(U256::ZERO)),
                    Some(acc) => {
                        emit(
                            host,
                            I::BlockRewardsAccrued {
                                blockNumber: block,
                                amount: share,
                                rewardPerToken: acc,
                            },
                        )?;
                        Ok(encode_u256(share))
                    }
                }
            }
            I::slashCall::SELECTOR => {
                let a = decode::<I::slashCall>(self.name(), input)?;
                if caller != GOVERNANCE {
                    return Err(ModuleError::revert(I::NotGovernance { caller }));
                }
                let bps = ProtocolParams::read_from(host, STAKING_SLASH_BPS)?;
                let cut = |x: U256| x * bps / U256::from(BPS);
                let s = staker(a.account);
                let bonded_cut = cut(host.sload(field(s, S_STAKED))?);
                if !bonded_cut.is_zero() {
                    change_stake(host, block, a.account, U256::ZERO, bonded_cut)?;
                }
                // Unbonding stake is slashable too, so unstaking cannot dodge a pending vote.
                let mut unbonding_cut = U256::ZERO;
                let (head, tail) = (
                    load_u64(host, field(s, S_UNBOND_HEAD))?,
                    load_u64(host, field(s, S_UNBOND_TAIL))?,
                );
                for i in head..tail {
                    let amount = host.sload(field(unbond(a.account, i), U_AMOUNT))?;
                    let c = cut(amount);
                    if !c.is_zero() {
                        host.sstore(field(unbond(a.account, i), U_AMOUNT), amount - c)?;
                        unbonding_cut += c;
                    }
                }
                if !unbonding_cut.is_zero() {
                    let left = host
                        .sload(field(s, S_UNBONDING))?
                        .saturating_sub(unbonding_cut);
                    host.sstore(field(s, S_UNBONDING), left)?;
                }
                let amount = bonded_cut + unbonding_cut;
                if !amount.is_zero() {
                    host.transfer(TREASURY, amount)?;
                }
                emit(
                    host,
                    I::Slashed {
                        account: a.account,
                        amount,
                        fractionBps: bps,
                    },
                )?;
                Ok(encode_u256(amount))
            }
            I::stakeOfCall::SELECTOR => {
                let a = decode::<I::stakeOfCall>(self.name(), input)?;
                let u = unbonding(host, a.account, block)?;
                let out = I::stakeOfReturn {
                    staked: host.sload(field(staker(a.account), S_STAKED))?,
                    delegatee: delegatee_of(host, a.account)?,
                    unbonding: u.pending,
                    withdrawable: u.withdrawable,
                    pendingRewards: pending_rewards(host, a.account)?,
                };
                Ok(I::stakeOfCall::abi_encode_returns(&out).into())
            }
            I::unbondingRequestsCall::SELECTOR => {
                let a = decode::<I::unbondingRequestsCall>(self.name(), input)?;
                let s = staker(a.account);
                let (head, tail) = (
                    load_u64(host, field(s, S_UNBOND_HEAD))?,
                    load_u64(host, field(s, S_UNBOND_TAIL))?,
                );
                let mut amounts = Vec::new();
                let mut releases = Vec::new();
                for i in head..tail {
                    amounts.push(host.sload(field(unbond(a.account, i), U_AMOUNT))?);
                    releases.push(load_u64(host, field(unbond(a.account, i), U_RELEASE))?);
                }
                Ok((amounts, releases).abi_encode_params().into())
            }
            I::votingPowerCall::SELECTOR => {
                let a = decode::<I::votingPowerCall>(self.name(), input)?;
                Ok(encode_u256(series_latest(host, Some(a.account))?))
            }
            I::votingPowerAtCall::SELECTOR => {
                let a = decode::<I::votingPowerAtCall>(self.name(), input)?;
                past_block(call, a.blockNumber)?;
                Ok(encode_u256(power_at(host, a.account, a.blockNumber)?))
            }
            I::totalStakedCall::SELECTOR => Ok(encode_u256(host.sload(total_slot())?)),
            I::totalStakedAtCall::SELECTOR => {
                let a = decode::<I::totalStakedAtCall>(self.name(), input)?;
                past_block(call, a.blockNumber)?;
                Ok(encode_u256(total_at(host, a.blockNumber)?))
            }
            I::rewardPerTokenCall::SELECTOR => {
                Ok(encode_u256(host.sload(reward_per_token_slot())?))
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_chain::{Chain, reverted_with};
    use super::*;
    use crate::genesis::Genesis;
    use crate::test_utils::key;
    use alloy_sol_types::SolError;
    use openledger_primitives::units::ONE_OPEN;

    fn open(n: u64) -> U256 {
        ONE_OPEN * U256::from(n)
    }

    /// Five funded accounts (1,000 OPEN each) and a 5-block unbonding period.
    /// Block fees stay with the treasury here, so balances are exact; the block reward has a
    /// test of its own.
    fn chain() -> Chain {
        chain_with_fee_share(0)
    }

    fn chain_with_fee_share(bps: u64) -> Chain {
        let genesis = Genesis {
            alloc: (0..5).map(|i| (key(i).address(), open(1_000))).collect(),
            params: vec![
                (STAKING_UNBONDING_BLOCKS.into(), U256::from(5)),
                (STAKING_BLOCK_FEE_SHARE_BPS.into(), U256::from(bps)),
            ],
            ..Default::default()
        };
        Chain::with_genesis(STAKING, &genesis)
    }

    #[test]
    fn stakers_earn_their_share_of_every_blocks_base_fees() {
        let (a, b) = (key(0), key(1));
        let mut c = chain_with_fee_share(4_000);
        // Nobody stakes yet: the whole base fee goes to the treasury.
        let treasury = c.balance(TREASURY);
        let first = c.send_to(key(2).address(), &key(2), vec![], U256::ZERO);
        assert!(first.success);
        assert_eq!(c.balance(TREASURY) - treasury, U256::from(first.gas_used));
        stake(&mut c, &a, open(100));
        stake(&mut c, &b, open(300));

        // From now on 40% of each block's base fee (1 wei per gas here) accrues to the stake.
        let (treasury, held) = (c.balance(TREASURY), c.balance(STAKING));
        let pending = |c: &Chain| {
            (
                stake_of(c, a.address()).pendingRewards,
                stake_of(c, b.address()).pendingRewards,
            )
        };
        let (a0, b0) = pending(&c);
        let tx = c.send_to(key(2).address(), &key(2), vec![], U256::ZERO);
        let fees = U256::from(tx.gas_used);
        let share = fees * U256::from(4_000u64) / U256::from(BPS);
        assert_eq!(c.balance(STAKING) - held, share);
        assert_eq!(c.balance(TREASURY) - treasury, fees - share);
        // Shared 1 : 3 by stake; what rounding leaves is carried, never created.
        let (a1, b1) = pending(&c);
        let (ra, rb) = (a1 - a0, b1 - b0);
        assert!(ra + rb <= share && share - (ra + rb) <= U256::from(2u64));
        assert!(rb >= ra * U256::from(3u64) - U256::from(3u64));

        // Only the chain runs the hook.
        let forged = c.send(
            &a,
            I::accrueBlockRewardsCall { blockFees: open(1) }.abi_encode(),
            U256::ZERO,
        );
        assert_eq!(reverted_with::<I::NotSystem>(&forged).caller, a.address());
    }

    fn supply(c: &Chain) -> U256 {
        c.state.accounts.values().map(|a| a.balance).sum()
    }

    fn stake_of(c: &Chain, who: Address) -> I::stakeOfReturn {
        I::stakeOfCall::abi_decode_returns(&c.view(I::stakeOfCall { account: who }.abi_encode()))
            .unwrap()
    }

    fn power(c: &Chain, who: Address) -> U256 {
        U256::from_be_slice(&c.view(I::votingPowerCall { account: who }.abi_encode()))
    }

    fn power_at(c: &Chain, who: Address, block: u64) -> U256 {
        U256::from_be_slice(
            &c.view(
                I::votingPowerAtCall {
                    account: who,
                    blockNumber: block,
                }
                .abi_encode(),
            ),
        )
    }

    fn stake(c: &mut Chain, who: &alloy_signer_local::PrivateKeySigner, amount: U256) {
        let tx = c.send(who, I::stakeCall {}.abi_encode(), amount);
        assert!(tx.success, "{:?}", tx.output);
    }

    #[test]
    fn unstake_waits_for_the_unbonding_period_and_cannot_exceed_the_stake() {
        let a = key(0);
        let mut c = chain();
        let supply_before = supply(&c);
        stake(&mut c, &a, open(10));
        assert_eq!(c.balance(STAKING), open(10));

        let too_much = c.send(
            &a,
            I::unstakeCall { amount: open(11) }.abi_encode(),
            U256::ZERO,
        );
        let e = reverted_with::<I::InsufficientStake>(&too_much);
        assert_eq!((e.staked, e.requested), (open(10), open(11)));
        let zero = c.send(
            &a,
            I::unstakeCall { amount: U256::ZERO }.abi_encode(),
            U256::ZERO,
        );
        reverted_with::<I::ZeroAmount>(&zero);

        let unstake = c.send(
            &a,
            I::unstakeCall { amount: open(4) }.abi_encode(),
            U256::ZERO,
        );
        assert!(unstake.success, "{:?}", unstake.output);
        let s = stake_of(&c, a.address());
        assert_eq!(
            (s.staked, s.unbonding, s.withdrawable),
            (open(6), open(4), U256::ZERO)
        );
        assert_eq!(
            power(&c, a.address()),
            open(6),
            "unbonding stake has no power"
        );

        let early = c.send(&a, I::withdrawCall {}.abi_encode(), U256::ZERO);
        assert_eq!(
            reverted_with::<I::NothingToWithdraw>(&early).nextReleaseBlock,
            6
        );
        c.advance(5);
        assert_eq!(stake_of(&c, a.address()).withdrawable, open(4));
        let before = c.balance(a.address());
        let withdrawn = c.send(&a, I::withdrawCall {}.abi_encode(), U256::ZERO);
        assert!(withdrawn.success, "{:?}", withdrawn.output);
        let fee = U256::from(withdrawn.gas_used) * U256::from(withdrawn.effective_gas_price);
        assert_eq!(c.balance(a.address()), before + open(4) - fee);
        assert_eq!(c.balance(STAKING), open(6));
        let again = c.send(&a, I::withdrawCall {}.abi_encode(), U256::ZERO);
        reverted_with::<I::NothingToWithdraw>(&again);
        let s = stake_of(&c, a.address());
        assert_eq!(
            (s.staked, s.unbonding, s.withdrawable),
            (open(6), U256::ZERO, U256::ZERO)
        );
        assert_eq!(
            supply(&c),
            supply_before,
            "staking moves OPEN, never makes it"
        );
    }

    #[test]
    fn rewards_are_shared_pro_rata_and_claimed_once() {
        let (a, b, late, funder) = (key(0), key(1), key(2), key(3));
        let mut c = chain();
        let none = c.send(&funder, I::fundRewardsCall {}.abi_encode(), open(1));
        reverted_with::<I::NoStakers>(&none);
        stake(&mut c, &a, open(30));
        stake(&mut c, &b, open(10));
        let supply_before = supply(&c);
        let funded = c.send(&funder, I::fundRewardsCall {}.abi_encode(), open(4));
        assert!(funded.success, "{:?}", funded.output);
        stake(&mut c, &late, open(40));
        assert_eq!(stake_of(&c, a.address()).pendingRewards, open(3));
        assert_eq!(stake_of(&c, b.address()).pendingRewards, open(1));
        assert_eq!(
            stake_of(&c, late.address()).pendingRewards,
            U256::ZERO,
            "came after"
        );

        let claim = c.send(&a, I::claimRewardsCall {}.abi_encode(), U256::ZERO);
        assert!(claim.success, "{:?}", claim.output);
        assert_eq!(U256::from_be_slice(&claim.output), open(3));
        let twice = c.send(&a, I::claimRewardsCall {}.abi_encode(), U256::ZERO);
        reverted_with::<I::NothingToClaim>(&twice);
        let nothing = c.send(&late, I::claimRewardsCall {}.abi_encode(), U256::ZERO);
        reverted_with::<I::NothingToClaim>(&nothing);

        // Unstaking settles rewards first: b keeps its 1 OPEN and earns nothing afterwards.
        let out = c.send(
            &b,
            I::unstakeCall { amount: open(10) }.abi_encode(),
            U256::ZERO,
        );
        assert!(out.success);
        let funded = c.send(&funder, I::fundRewardsCall {}.abi_encode(), open(7));
        assert!(funded.success);
        assert_eq!(stake_of(&c, b.address()).pendingRewards, open(1));
        assert_eq!(stake_of(&c, a.address()).pendingRewards, open(3));
        assert_eq!(stake_of(&c, late.address()).pendingRewards, open(4));
        // Everything staked, unbonding and owed is held by the module; nothing was created.
        assert_eq!(c.balance(STAKING), open(30 + 40 + 10) + open(1 + 3 + 4));
        assert_eq!(
            supply(&c),
            supply_before,
            "funding and claiming only move OPEN"
        );
    }

    #[test]
    fn voting_power_is_checkpointed_and_follows_delegation() {
        let (a, curator) = (key(0), key(1));
        let mut c = chain();
        stake(&mut c, &a, open(10)); // block 1
        c.advance(2);
        let to_curator = I::delegateCall {
            to: curator.address(),
        };
        let d = c.send(&a, to_curator.abi_encode(), U256::ZERO); // block 3
        assert!(d.success, "{:?}", d.output);
        let again = c.send(&a, to_curator.abi_encode(), U256::ZERO);
        assert_eq!(
            reverted_with::<I::AlreadyDelegated>(&again).delegatee,
            curator.address()
        );
        c.advance(1);
        stake(&mut c, &a, open(5)); // block 4: goes to the delegatee too
        c.advance(1);
        assert_eq!(power(&c, a.address()), U256::ZERO);
        assert_eq!(power(&c, curator.address()), open(15));
        assert_eq!(stake_of(&c, a.address()).delegatee, curator.address());
        assert_eq!(power_at(&c, a.address(), 0), U256::ZERO);
        assert_eq!(power_at(&c, a.address(), 2), open(10));
        assert_eq!(power_at(&c, curator.address(), 2), U256::ZERO);
        assert_eq!(power_at(&c, curator.address(), 3), open(10));
        assert_eq!(power_at(&c, curator.address(), 4), open(15));
        let total = |c: &Chain, b| {
            U256::from_be_slice(&c.view(I::totalStakedAtCall { blockNumber: b }.abi_encode()))
        };
        assert_eq!(
            (total(&c, 0), total(&c, 1), total(&c, 4)),
            (U256::ZERO, open(10), open(15))
        );

        let back = c.send(
            &a,
            I::delegateCall { to: Address::ZERO }.abi_encode(),
            U256::ZERO,
        );
        assert!(back.success);
        c.advance(1);
        assert_eq!(power(&c, a.address()), open(15));
        assert_eq!(power(&c, curator.address()), U256::ZERO);
        assert_eq!(
            power_at(&c, curator.address(), 4),
            open(15),
            "the past stays"
        );

        // The current block may still change, so it cannot be read as a snapshot.
        let out = crate::executor::call(
            &crate::spec::ChainSpec::devnet(crate::test_utils::CHAIN_ID),
            &c.state,
            &c.ctx(),
            revm::context::TxEnv {
                kind: alloy_primitives::TxKind::Call(STAKING),
                data: I::votingPowerAtCall {
                    account: a.address(),
                    blockNumber: c.number,
                }
                .abi_encode()
                .into(),
                gas_limit: 1_000_000,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!out.success);
        I::FutureBlock::abi_decode(&out.output).unwrap();
    }

    #[test]
    fn only_governance_may_slash_and_stake_needs_value() {
        let (a, b) = (key(0), key(1));
        let mut c = chain();
        stake(&mut c, &a, open(10));
        let slash = c.send(
            &b,
            I::slashCall {
                account: a.address(),
            }
            .abi_encode(),
            U256::ZERO,
        );
        assert_eq!(
            reverted_with::<I::NotGovernance>(&slash).caller,
            b.address()
        );
        let empty = c.send(&b, I::stakeCall {}.abi_encode(), U256::ZERO);
        reverted_with::<I::ZeroAmount>(&empty);
        let paid = c.send(&b, I::claimRewardsCall {}.abi_encode(), U256::from(1));
        assert!(!paid.success, "claimRewards is not payable");
        assert_eq!(stake_of(&c, a.address()).staked, open(10));
    }

    /// Runtime code that DELEGATECALLs Staking with its own calldata and returns or reverts
    /// with the result.
    const DELEGATOR: [u8; 27] = [
        0x36, 0x5f, 0x5f, 0x37, // calldatacopy(0, 0, calldatasize)
        0x5f, 0x5f, 0x36, 0x5f, 0x61, 0x0f, 0x04, 0x5a,
        0xf4, // delegatecall(gas, STAKING, …)
        0x3d, 0x5f, 0x5f, 0x3e, // returndatacopy(0, 0, returndatasize)
        0x60, 0x17, 0x57, // jumpi(ok, success)
        0x3d, 0x5f, 0xfd, // revert(0, returndatasize)
        0x5b, 0x3d, 0x5f, 0xf3, // ok: return(0, returndatasize)
    ];

    #[test]
    fn a_delegating_contract_can_neither_fake_value_nor_act_for_its_caller() {
        let (victim, attacker) = (key(0), key(1));
        let mut c = chain();
        let contract = Address::repeat_byte(0xc0);
        let code = Bytes::from(DELEGATOR.to_vec());
        let code_hash = openledger_primitives::keccak256(&code);
        c.state.codes.insert(code_hash, code);
        c.state.accounts.insert(
            contract,
            crate::state::AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash,
            },
        );
        stake(&mut c, &attacker, open(10)); // Staking holds OPEN worth stealing.
        stake(&mut c, &victim, open(10));

        // DELEGATECALL's value is only apparent: no stake is credited for it.
        let fake = c.send_to(contract, &victim, I::stakeCall {}.abi_encode(), open(5));
        reverted_with::<I::ZeroAmount>(&fake);
        // The module acts for the delegating contract, never for the contract's caller.
        let hijack = I::delegateCall {
            to: attacker.address(),
        };
        let out = c.send_to(contract, &victim, hijack.abi_encode(), U256::ZERO);
        assert!(out.success, "{:?}", out.output);
        assert_eq!(stake_of(&c, victim.address()).delegatee, victim.address());
        assert_eq!(stake_of(&c, contract).delegatee, attacker.address());
        assert_eq!(power(&c, victim.address()), open(10));
        let unstake = c.send_to(
            contract,
            &victim,
            I::unstakeCall { amount: open(1) }.abi_encode(),
            U256::ZERO,
        );
        assert_eq!(
            reverted_with::<I::InsufficientStake>(&unstake).staked,
            U256::ZERO
        );
        assert_eq!(c.balance(STAKING), open(20));
    }
}
