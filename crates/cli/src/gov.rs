//! `openledger gov list|show|propose|vote|execute|settle|params`: on-chain governance through
//! the `Governance` precompile. Tallies are read live with view calls.

use std::time::Duration;

use alloy_sol_types::{SolCall, SolInterface};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use openledger_chain::modules::governance::{
    ABSTAIN, AGAINST, FOR, IGovernance, ProposalState, VETO,
};
use openledger_chain::modules::protocol_params::{GOVERNANCE_DEPOSIT, IProtocolParams};
use openledger_primitives::addresses::{GOVERNANCE, PROTOCOL_PARAMS};
use openledger_primitives::{Address, U256};
use openledger_wallet::{RpcClient, RpcError, format_open, parse_open};

use crate::chaintx::{Signing, block_number, event, transact, view};

#[derive(Subcommand, Debug)]
pub enum GovCommand {
    /// Every proposal with its state and tally.
    List,
    /// One proposal: actions, rules, live tally, and (with --voter) a vote.
    Show {
        id: u64,
        #[arg(long)]
        voter: Option<Address>,
    },
    /// Make a proposal (sends the deposit set by `governance.proposal_deposit`).
    Propose {
        #[arg(long)]
        description: String,
        /// A parameter change, NAME=VALUE (repeat for more; all apply together).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, U256)>,
        /// A treasury payment, ADDRESS=OPEN (repeat for more).
        #[arg(long = "spend", value_parser = parse_spend)]
        spends: Vec<(Address, U256)>,
        /// An account to slash by `staking.slash_bps` (repeat for more).
        #[arg(long = "slash")]
        slashes: Vec<Address>,
        /// A contribution to remove for fraud: it stops earning and the curators who accepted
        /// it are slashed (repeat for more; such a proposal carries only removals).
        #[arg(long = "remove", conflicts_with_all = ["params", "spends", "slashes"])]
        removals: Vec<u64>,
    },
    /// Vote for, against, abstain or veto (a later vote replaces an earlier one).
    Vote {
        id: u64,
        #[arg(value_parser = parse_support)]
        support: u8,
    },
    /// Apply a passed proposal after its timelock by hand (the chain does it by itself at the
    /// next block start; this retries one whose automatic execution failed).
    Execute { id: u64 },
    /// Refund a finished proposal's deposit (or forfeit it to the treasury if vetoed).
    Settle { id: u64 },
    /// Every protocol parameter and its value.
    Params,
}

fn parse_param(s: &str) -> Result<(String, U256), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let value = value
        .trim()
        .parse::<U256>()
        .map_err(|e| format!("{value:?} is not an integer: {e}"))?;
    Ok((name.trim().to_string(), value))
}

fn parse_spend(s: &str) -> Result<(Address, U256), String> {
    let (to, amount) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ADDRESS=OPEN"))?;
    let to = to
        .trim()
        .parse()
        .map_err(|e| format!("{to:?} is not an address: {e}"))?;
    let amount = parse_open(amount.trim()).map_err(|e| e.to_string())?;
    Ok((to, amount))
}

fn parse_support(s: &str) -> Result<u8, String> {
    match s {
        "for" | "yes" => Ok(FOR),
        "against" | "no" => Ok(AGAINST),
        "abstain" => Ok(ABSTAIN),
        "veto" => Ok(VETO),
        _ => Err(format!("{s:?}: vote for, against, abstain or veto")),
    }
}

fn support_name(support: u8) -> &'static str {
    match support {
        FOR => "for",
        AGAINST => "against",
        ABSTAIN => "abstain",
        VETO => "veto",
        _ => "?",
    }
}

fn state_name(state: u8) -> &'static str {
    ProposalState::from_u8(state).map_or("?", ProposalState::name)
}

fn explain(e: RpcError) -> anyhow::Error {
    let Some(data) = e.revert_data() else {
        return e.into();
    };
    use IGovernance::IGovernanceErrors as E;
    let why = match E::abi_decode(&data) {
        Ok(E::WrongDeposit(e)) => format!(
            "the deposit is {} OPEN, {} OPEN was sent",
            format_open(e.required),
            format_open(e.paid)
        ),
        Ok(E::UnknownParam(e)) => format!("there is no parameter {:?}", e.name),
        Ok(E::ParamOutOfRange(e)) => format!(
            "{} = {} is out of range ({} to {})",
            e.name, e.value, e.min, e.max
        ),
        Ok(E::DuplicateParam(e)) => format!("{} is set twice", e.name),
        Ok(E::FeeSplitNotWhole(e)) => format!(
            "the settlement fee split would sum to {} bps; it must sum to 10000",
            e.sumBps
        ),
        Ok(E::InvalidProposal(e)) => format!("invalid proposal: {}", e.what),
        Ok(E::UnknownProposal(e)) => format!("proposal {} does not exist", e.proposalId),
        Ok(E::InvalidSupport(e)) => format!("{} is not a vote choice", e.support),
        Ok(E::VotingClosed(e)) => format!(
            "voting on proposal {} ended at block {}",
            e.proposalId, e.endBlock
        ),
        Ok(E::NoVotingPower(e)) => format!(
            "{} had no voting power at the snapshot block {}",
            e.voter, e.snapshotBlock
        ),
        Ok(E::AlreadyVoted(e)) => format!(
            "{} already voted {} on proposal {}",
            e.voter,
            support_name(e.support),
            e.proposalId
        ),
        Ok(E::VotingNotEnded(e)) => format!(
            "voting on proposal {} runs until block {}",
            e.proposalId, e.endBlock
        ),
        Ok(E::NotExecutable(e)) => format!(
            "proposal {} is {}; a passed proposal can execute from block {}",
            e.proposalId,
            state_name(e.state),
            e.executableBlock
        ),
        Ok(E::DepositAlreadySettled(e)) => {
            format!(
                "the deposit of proposal {} was already settled",
                e.proposalId
            )
        }
        Ok(E::TreasuryInsufficient(e)) => format!(
            "the treasury holds {} OPEN, the proposal pays {} OPEN",
            format_open(e.balance),
            format_open(e.needed)
        ),
        Ok(E::NotSystem(e)) => format!(
            "{} is not the chain; only the chain runs executeReady",
            e.caller
        ),
        Err(_) => match IProtocolParams::IProtocolParamsErrors::abi_decode(&data) {
            Ok(IProtocolParams::IProtocolParamsErrors::OutOfBounds(p)) => format!(
                "{} = {} is out of range ({} to {})",
                p.name, p.value, p.min, p.max
            ),
            Ok(IProtocolParams::IProtocolParamsErrors::UnknownParam(p)) => {
                format!("there is no parameter {:?}", p.name)
            }
            Ok(IProtocolParams::IProtocolParamsErrors::NotGovernance(p)) => {
                format!("{} is not the governance module", p.caller)
            }
            Err(_) => return e.into(),
        },
    };
    anyhow::anyhow!("the Governance precompile refused: {why}")
}

/// A proposal with its tally, its actions and the contributions it removes for fraud.
struct Loaded {
    p: IGovernance::getProposalReturn,
    actions: IGovernance::proposalActionsReturn,
    removals: Vec<u64>,
}

fn load(client: &RpcClient, id: u64) -> Result<Loaded> {
    let p = view(
        client,
        GOVERNANCE,
        IGovernance::getProposalCall { proposalId: id },
        explain,
    )?;
    let actions = view(
        client,
        GOVERNANCE,
        IGovernance::proposalActionsCall { proposalId: id },
        explain,
    )?;
    let removals = view(
        client,
        GOVERNANCE,
        IGovernance::proposalRemovalsCall { proposalId: id },
        explain,
    )?;
    Ok(Loaded {
        p,
        actions,
        removals,
    })
}

fn show(client: &RpcClient, id: u64, voter: Option<Address>) -> Result<()> {
    let Loaded {
        p,
        actions,
        removals,
    } = load(client, id)?;
    let head = block_number(client)?;
    println!("proposal {id}: {}", p.description);
    println!("  proposer      {}", p.proposer);
    println!(
        "  state         {} (head block {head})",
        state_name(p.state)
    );
    println!(
        "  blocks        snapshot {}, voting until {}, executable from {}",
        p.snapshotBlock, p.endBlock, p.executableBlock
    );
    println!("  deposit       {} OPEN", format_open(p.deposit));
    for (name, value) in actions.paramNames.iter().zip(&actions.paramValues) {
        println!("  set           {name} = {value}");
    }
    for (to, amount) in actions.spendTo.iter().zip(&actions.spendAmounts) {
        println!("  pay           {} OPEN to {to}", format_open(*amount));
    }
    for account in &actions.slashAccounts {
        println!("  slash         {account}");
    }
    for contribution in removals {
        println!("  remove        contribution {contribution} (and slash its curators)");
    }
    let total = p.forVotes + p.againstVotes + p.abstainVotes + p.vetoVotes;
    println!("  tally         (OPEN of voting power)");
    println!("    for         {}", format_open(p.forVotes));
    println!("    against     {}", format_open(p.againstVotes));
    println!("    abstain     {}", format_open(p.abstainVotes));
    println!("    veto        {}", format_open(p.vetoVotes));
    println!(
        "    total       {} (quorum {})",
        format_open(total),
        format_open(p.quorumVotes)
    );
    if let Some(voter) = voter {
        let v = view(
            client,
            GOVERNANCE,
            IGovernance::getVoteCall {
                proposalId: id,
                voter,
            },
            explain,
        )?;
        if v.voted {
            println!(
                "  {voter} voted {} with {} OPEN",
                support_name(v.support),
                format_open(v.weight)
            );
        } else {
            println!("  {voter} has not voted");
        }
    }
    Ok(())
}

pub fn run(cmd: GovCommand, signing: Signing) -> Result<()> {
    let client = RpcClient::with_timeout(&signing.rpc, Duration::from_secs(60));
    let send = |input: Vec<u8>, value: U256| -> Result<serde_json::Value> {
        let signer = signing.require_signer()?;
        transact(&client, &signer, GOVERNANCE, input, value, explain)
    };
    match cmd {
        GovCommand::List => {
            let n = view(
                &client,
                GOVERNANCE,
                IGovernance::proposalCountCall {},
                explain,
            )?;
            if n == 0 {
                println!("no proposals");
            }
            for id in 1..=n {
                let p = view(
                    &client,
                    GOVERNANCE,
                    IGovernance::getProposalCall { proposalId: id },
                    explain,
                )?;
                println!(
                    "{id:>4}  {:<10}  for {} / against {} / abstain {} / veto {}  until block {}  {}",
                    state_name(p.state),
                    format_open(p.forVotes),
                    format_open(p.againstVotes),
                    format_open(p.abstainVotes),
                    format_open(p.vetoVotes),
                    p.endBlock,
                    p.description
                );
            }
        }
        GovCommand::Show { id, voter } => show(&client, id, voter)?,
        GovCommand::Propose {
            description,
            params,
            spends,
            slashes,
            removals,
        } => {
            let deposit = view(
                &client,
                PROTOCOL_PARAMS,
                IProtocolParams::getCall {
                    name: GOVERNANCE_DEPOSIT.into(),
                },
                explain,
            )?;
            let input = if removals.is_empty() {
                IGovernance::proposeCall {
                    description,
                    paramNames: params.iter().map(|(n, _)| n.clone()).collect(),
                    paramValues: params.iter().map(|(_, v)| *v).collect(),
                    spendTo: spends.iter().map(|(a, _)| *a).collect(),
                    spendAmounts: spends.iter().map(|(_, v)| *v).collect(),
                    slashAccounts: slashes,
                }
                .abi_encode()
            } else {
                IGovernance::proposeRemovalCall {
                    description,
                    contributionIds: removals,
                }
                .abi_encode()
            };
            let receipt = send(input, deposit)?;
            let e: IGovernance::ProposalCreated = event(&receipt)?;
            println!(
                "proposal {} created (deposit {} OPEN); voting until block {}, snapshot block {}",
                e.proposalId,
                format_open(e.deposit),
                e.endBlock,
                e.snapshotBlock
            );
        }
        GovCommand::Vote { id, support } => {
            let receipt = send(
                IGovernance::voteCall {
                    proposalId: id,
                    support,
                }
                .abi_encode(),
                U256::ZERO,
            )?;
            let e: IGovernance::VoteCast = event(&receipt)?;
            println!(
                "{} {} on proposal {id} with {} OPEN",
                if e.changed {
                    "changed vote to"
                } else {
                    "voted"
                },
                support_name(e.support),
                format_open(e.weight)
            );
        }
        GovCommand::Execute { id } => {
            let receipt = send(
                IGovernance::executeCall { proposalId: id }.abi_encode(),
                U256::ZERO,
            )?;
            event::<IGovernance::ProposalExecuted>(&receipt)
                .context("execution left no ProposalExecuted event")?;
            println!(
                "proposal {id} executed in block {}",
                u64::from_str_radix(
                    receipt["blockNumber"]
                        .as_str()
                        .unwrap_or("0x0")
                        .trim_start_matches("0x"),
                    16
                )
                .unwrap_or(0)
            );
        }
        GovCommand::Settle { id } => {
            let receipt = send(
                IGovernance::settleDepositCall { proposalId: id }.abi_encode(),
                U256::ZERO,
            )?;
            if let Ok(e) = event::<IGovernance::DepositRefunded>(&receipt) {
                println!("refunded {} OPEN to {}", format_open(e.amount), e.proposer);
            } else if let Ok(e) = event::<IGovernance::DepositForfeited>(&receipt) {
                println!(
                    "the proposal was vetoed: {} OPEN went to the treasury",
                    format_open(e.amount)
                );
            } else {
                bail!("the receipt records no deposit settlement");
            }
        }
        GovCommand::Params => {
            let all = view(
                &client,
                PROTOCOL_PARAMS,
                IProtocolParams::allCall {},
                explain,
            )?;
            for (name, value) in all.names.iter().zip(&all.values) {
                println!("{name:<36} {value}");
            }
        }
    }
    Ok(())
}

/// A proposal with its live tally and actions, as the HTTP API shows it. Amounts are wei as
/// decimal strings (JSON numbers lose precision past 2⁵³).
pub fn proposal_json(client: &RpcClient, id: u64) -> Result<serde_json::Value> {
    let Loaded {
        p,
        actions: a,
        removals,
    } = load(client, id)?;
    let wei = |v: &U256| v.to_string();
    Ok(serde_json::json!({
        "id": id,
        "proposer": p.proposer,
        "description": p.description,
        "state": state_name(p.state),
        "snapshot_block": p.snapshotBlock,
        "end_block": p.endBlock,
        "executable_block": p.executableBlock,
        "deposit": wei(&p.deposit),
        "tally": {
            "for": wei(&p.forVotes),
            "against": wei(&p.againstVotes),
            "abstain": wei(&p.abstainVotes),
            "veto": wei(&p.vetoVotes),
            "quorum": wei(&p.quorumVotes),
        },
        "actions": {
            "params": a.paramNames.iter().zip(&a.paramValues)
                .map(|(n, v)| serde_json::json!({"name": n, "value": wei(v)})).collect::<Vec<_>>(),
            "spends": a.spendTo.iter().zip(&a.spendAmounts)
                .map(|(to, v)| serde_json::json!({"to": to, "amount": wei(v)})).collect::<Vec<_>>(),
            "slashes": a.slashAccounts,
            "removals": removals,
        },
    }))
}

/// Every proposal, newest first.
pub fn proposals_json(client: &RpcClient) -> Result<serde_json::Value> {
    let n = view(
        client,
        GOVERNANCE,
        IGovernance::proposalCountCall {},
        explain,
    )?;
    let list = (1..=n)
        .rev()
        .map(|id| proposal_json(client, id))
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({ "object": "list", "data": list }))
}

/// Every protocol parameter and its value.
pub fn params_json(client: &RpcClient) -> Result<serde_json::Value> {
    let all = view(
        client,
        PROTOCOL_PARAMS,
        IProtocolParams::allCall {},
        explain,
    )?;
    let map: serde_json::Map<String, serde_json::Value> = all
        .names
        .into_iter()
        .zip(all.values)
        .map(|(n, v)| (n, serde_json::Value::String(v.to_string())))
        .collect();
    Ok(serde_json::Value::Object(map))
}

/// `GET /v1/governance/proposals`, `/v1/governance/proposals/{id}` (live tallies) and
/// `/v1/governance/params`, read from the node's chain.
pub fn router(rpc_url: String) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    async fn answer(
        rpc: String,
        f: impl FnOnce(&RpcClient) -> Result<serde_json::Value> + Send + 'static,
    ) -> Response {
        let out = tokio::task::spawn_blocking(move || {
            f(&RpcClient::with_timeout(&rpc, Duration::from_secs(10)))
        })
        .await;
        match out {
            Ok(Ok(v)) => axum::Json(v).into_response(),
            Ok(Err(e)) => {
                let text = format!("{e:#}");
                let status = if text.contains("does not exist") {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                };
                (
                    status,
                    axum::Json(serde_json::json!({"error": {"message": text}})),
                )
                    .into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    axum::Router::new()
        .route(
            "/v1/governance/proposals",
            get(|State(rpc): State<String>| answer(rpc, proposals_json)),
        )
        .route(
            "/v1/governance/proposals/{id}",
            get(|State(rpc): State<String>, Path(id): Path<u64>| {
                answer(rpc, move |c| proposal_json(c, id))
            }),
        )
        .route(
            "/v1/governance/params",
            get(|State(rpc): State<String>| answer(rpc, params_json)),
        )
        .with_state(rpc_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_arguments_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_param("settlement.treasury_bps=500").unwrap(),
            ("settlement.treasury_bps".to_string(), U256::from(500))
        );
        assert!(parse_param("settlement.treasury_bps").is_err());
        assert!(parse_param("x=-1").is_err());
        let (to, amount) = parse_spend("0x70997970C51812dc3A010C7d01b50e0d17dc79C8=1.5").unwrap();
        assert_eq!(
            to,
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse::<Address>()
                .unwrap()
        );
        assert_eq!(amount, U256::from(1_500_000_000_000_000_000u128));
        assert!(parse_spend("nobody=1").is_err());
        assert_eq!(parse_support("veto").unwrap(), VETO);
        assert_eq!(parse_support("no").unwrap(), AGAINST);
        assert!(parse_support("maybe").is_err());
        assert_eq!(state_name(ProposalState::Queued as u8), "queued");
        assert_eq!(state_name(9), "?");
    }
}
