//! `openledger stake …`: stake, unstake, withdraw, delegate, claim rewards and show an
//! account's stake — transactions to the `Staking` precompile signed here (the same ones
//! `cast send` makes).

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use openledger_chain::modules::staking::IStaking;
use openledger_primitives::addresses::STAKING;
use openledger_primitives::{Address, U256};
use openledger_wallet::{RpcClient, RpcError, format_open, parse_open};

use crate::chaintx::{Signing, block_number, event, transact, view};

#[derive(Subcommand, Debug)]
pub enum StakeCommand {
    /// Stake OPEN (e.g. `stake add 100`).
    #[command(visible_alias = "stake")]
    Add {
        /// Amount in OPEN (decimals allowed).
        amount: String,
    },
    /// Start unbonding OPEN; withdraw it after `staking.unbonding_blocks`.
    Unstake { amount: String },
    /// Pay out the unbonding requests that have matured.
    Withdraw,
    /// Give your voting power to a validator or curator (`--to self` takes it back).
    Delegate {
        #[arg(long, value_parser = parse_delegatee)]
        to: Address,
    },
    /// Claim accrued staking rewards.
    Claim,
    /// Stake, delegation, unbonding, rewards and voting power of an account.
    Show {
        /// The account (default: the signer's).
        address: Option<Address>,
    },
    /// Share OPEN among all current stakers, pro rata (e.g. fees assigned to stakers).
    Fund { amount: String },
}

fn parse_delegatee(s: &str) -> Result<Address, String> {
    if s == "self" {
        return Ok(Address::ZERO);
    }
    s.parse()
        .map_err(|e| format!("{s:?} is not an address or `self`: {e}"))
}

fn explain(e: RpcError) -> anyhow::Error {
    use IStaking::IStakingErrors as E;
    use alloy_sol_types::SolInterface;
    let Some(error) = e.revert_data().and_then(|data| E::abi_decode(&data).ok()) else {
        return e.into();
    };
    let why = match error {
        E::ZeroAmount(_) => "the amount must be more than zero".to_string(),
        E::InsufficientStake(e) => format!(
            "you have {} OPEN staked, cannot unstake {} OPEN",
            format_open(e.staked),
            format_open(e.requested)
        ),
        E::NothingToWithdraw(e) if e.nextReleaseBlock == 0 => "nothing is unbonding".to_string(),
        E::NothingToWithdraw(e) => format!(
            "nothing has matured yet; the next request is released at block {}",
            e.nextReleaseBlock
        ),
        E::NothingToClaim(_) => "no rewards to claim".to_string(),
        E::NoStakers(_) => "nobody is staking, so there is nobody to reward".to_string(),
        E::AlreadyDelegated(e) => format!("your power already goes to {}", e.delegatee),
        E::TooManyUnbonding(e) => format!(
            "{} unbonding requests are pending; withdraw matured ones first",
            e.max
        ),
        E::NotGovernance(e) => format!("{} is not the governance module", e.caller),
        E::NotSystem(e) => format!(
            "{} is not the chain; only the chain accrues block rewards",
            e.caller
        ),
        E::FutureBlock(e) => format!(
            "block {} is not in the past (current {})",
            e.blockNumber, e.currentBlock
        ),
    };
    anyhow::anyhow!("the Staking precompile refused: {why}")
}

fn amount(s: &str) -> Result<U256> {
    Ok(parse_open(s)?)
}

pub fn run(cmd: StakeCommand, signing: Signing) -> Result<()> {
    let client = RpcClient::with_timeout(&signing.rpc, Duration::from_secs(60));
    let send = |input: Vec<u8>, value: U256| -> Result<serde_json::Value> {
        let signer = signing.require_signer()?;
        transact(&client, &signer, STAKING, input, value, explain)
    };
    use alloy_sol_types::SolCall;
    match cmd {
        StakeCommand::Add { amount: a } => {
            let receipt = send(IStaking::stakeCall {}.abi_encode(), amount(&a)?)?;
            let e: IStaking::Staked = event(&receipt)?;
            println!(
                "staked {} OPEN; {} now has {} OPEN staked",
                format_open(e.amount),
                e.staker,
                format_open(e.staked)
            );
        }
        StakeCommand::Unstake { amount: a } => {
            let receipt = send(
                IStaking::unstakeCall {
                    amount: amount(&a)?,
                }
                .abi_encode(),
                U256::ZERO,
            )?;
            let e: IStaking::UnstakeRequested = event(&receipt)?;
            println!(
                "unbonding {} OPEN; withdraw from block {}",
                format_open(e.amount),
                e.releaseBlock
            );
        }
        StakeCommand::Withdraw => {
            let receipt = send(IStaking::withdrawCall {}.abi_encode(), U256::ZERO)?;
            let e: IStaking::Withdrawn = event(&receipt)?;
            println!("withdrew {} OPEN", format_open(e.amount));
        }
        StakeCommand::Delegate { to } => {
            let receipt = send(IStaking::delegateCall { to }.abi_encode(), U256::ZERO)?;
            let e: IStaking::DelegateChanged = event(&receipt)?;
            println!(
                "voting power of {} OPEN moved from {} to {}",
                format_open(e.amount),
                e.fromDelegate,
                e.toDelegate
            );
        }
        StakeCommand::Claim => {
            let receipt = send(IStaking::claimRewardsCall {}.abi_encode(), U256::ZERO)?;
            let e: IStaking::RewardsClaimed = event(&receipt)?;
            println!("claimed {} OPEN of rewards", format_open(e.amount));
        }
        StakeCommand::Fund { amount: a } => {
            let receipt = send(IStaking::fundRewardsCall {}.abi_encode(), amount(&a)?)?;
            let e: IStaking::RewardsFunded = event(&receipt)?;
            println!(
                "shared {} OPEN among stakers (reward per staked OPEN now {})",
                format_open(e.amount),
                format_open(e.rewardPerToken)
            );
        }
        StakeCommand::Show { address } => {
            let account = match address {
                Some(a) => a,
                None => signing.require_signer()?.address(),
            };
            let s = view(&client, STAKING, IStaking::stakeOfCall { account }, explain)?;
            let power = view(
                &client,
                STAKING,
                IStaking::votingPowerCall { account },
                explain,
            )?;
            let total = view(&client, STAKING, IStaking::totalStakedCall {}, explain)?;
            let requests = view(
                &client,
                STAKING,
                IStaking::unbondingRequestsCall { account },
                explain,
            )?;
            println!("account        {account}");
            println!("staked         {} OPEN", format_open(s.staked));
            if s.delegatee == account {
                println!("delegated to   (self)");
            } else {
                println!("delegated to   {}", s.delegatee);
            }
            println!("voting power   {} OPEN", format_open(power));
            println!("unbonding      {} OPEN", format_open(s.unbonding));
            println!("withdrawable   {} OPEN", format_open(s.withdrawable));
            println!("rewards        {} OPEN", format_open(s.pendingRewards));
            println!("total staked   {} OPEN", format_open(total));
            if !requests.amounts.is_empty() {
                let now = block_number(&client)?;
                println!("unbonding requests (head block {now}):");
                for (amount, release) in requests.amounts.iter().zip(&requests.releaseBlocks) {
                    println!(
                        "  {} OPEN released at block {release}",
                        format_open(*amount)
                    );
                }
            }
        }
    }
    Ok(())
}
