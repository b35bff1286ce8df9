//! `openledger inference …` and `openledger earnings …`: paying for inference (a deposit in the
//! `Inference` precompile, the node operators allowed to charge it, API keys) and collecting
//! what settlement paid (the `Settlement` precompile).

use anyhow::{Context, Result};
use clap::Subcommand;
use openledger_chain::modules::inference::IInference;
use openledger_chain::modules::settlement::ISettlement;
use openledger_primitives::addresses::{INFERENCE, SETTLEMENT};
use openledger_primitives::{Address, U256};
use openledger_wallet::{RpcClient, RpcError, format_open, parse_open};
use serde_json::json;

use crate::chaintx::{event, transact, view};
use crate::datanet::{Api, Endpoints};

#[derive(Subcommand, Debug)]
pub enum InferenceCommand {
    /// Deposit OPEN to pay for inference, approving the node's operator to charge it.
    Deposit {
        /// Amount in OPEN.
        amount: String,
        /// The operator allowed to charge (default: the node's, from its API).
        #[arg(long)]
        operator: Option<Address>,
    },
    /// Allow an operator to charge your deposit.
    Approve { operator: Address },
    /// Stop an operator from charging your deposit.
    Revoke { operator: Address },
    /// Announce a withdrawal; it can be paid after `inference.withdraw_delay_blocks`.
    RequestWithdraw { amount: String },
    /// Pay out the announced withdrawal.
    Withdraw,
    /// A deposit, its announced withdrawal and the usage the node has not settled yet.
    Show { address: Option<Address> },
    /// Make an API key for your account (the `Authorization: Bearer` of OpenAI clients).
    ApiKey,
}

#[derive(Subcommand, Debug)]
pub enum EarningsCommand {
    /// What an account earned from settled inference, and what it can claim.
    Show {
        address: Option<Address>,
        /// Also show the earnings from this datanet.
        #[arg(long)]
        datanet: Option<u64>,
        /// Also show the earnings from this model.
        #[arg(long)]
        model: Option<u64>,
    },
    /// Pay out your claimable earnings.
    Claim,
}

fn explain(e: RpcError) -> anyhow::Error {
    match e.revert_data() {
        Some(data) => anyhow::anyhow!(
            "the chain refused: {}",
            crate::billing::explain_settlement(&data)
        ),
        None => e.into(),
    }
}

fn account_or_signer(address: Option<Address>, endpoints: &Endpoints) -> Result<Address> {
    match address {
        Some(a) => Ok(a),
        None => Ok(endpoints.signing.require_signer()?.address()),
    }
}

/// The operator the node settles with, from its billing API.
fn node_operator(endpoints: &Endpoints) -> Result<Address> {
    let api = Api::new(&endpoints.api);
    let billing = api.json("billing", api.agent.get(api.url("/v1/billing")).call())?;
    billing["operator"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the node's /v1/billing names no operator")
}

pub fn run(cmd: InferenceCommand, endpoints: Endpoints) -> Result<()> {
    use alloy_sol_types::SolCall;
    let client = RpcClient::new(&endpoints.signing.rpc);
    let send = |input: Vec<u8>, value: U256| -> Result<serde_json::Value> {
        let signer = endpoints.signing.require_signer()?;
        transact(&client, &signer, INFERENCE, input, value, explain)
    };
    match cmd {
        InferenceCommand::Deposit { amount, operator } => {
            let operator = match operator {
                Some(o) => o,
                None => node_operator(&endpoints)?,
            };
            let receipt = send(
                IInference::depositCall { operator }.abi_encode(),
                parse_open(&amount)?,
            )?;
            let e: IInference::Deposited = event(&receipt)?;
            println!(
                "deposited {} OPEN; {} now has {} OPEN for inference, chargeable by {operator}",
                format_open(e.amount),
                e.account,
                format_open(e.balance)
            );
        }
        InferenceCommand::Approve { operator } | InferenceCommand::Revoke { operator } => {
            let approved = matches!(cmd, InferenceCommand::Approve { .. });
            send(
                IInference::setOperatorCall { operator, approved }.abi_encode(),
                U256::ZERO,
            )?;
            println!(
                "operator {operator} {}",
                if approved { "approved" } else { "revoked" }
            );
        }
        InferenceCommand::RequestWithdraw { amount } => {
            let receipt = send(
                IInference::requestWithdrawCall {
                    amount: parse_open(&amount)?,
                }
                .abi_encode(),
                U256::ZERO,
            )?;
            let e: IInference::WithdrawRequested = event(&receipt)?;
            println!(
                "withdrawal of {} OPEN announced; withdraw from block {}",
                format_open(e.amount),
                e.releaseBlock
            );
        }
        InferenceCommand::Withdraw => {
            let receipt = send(IInference::withdrawCall {}.abi_encode(), U256::ZERO)?;
            let e: IInference::Withdrawn = event(&receipt)?;
            println!("withdrew {} OPEN", format_open(e.amount));
        }
        InferenceCommand::Show { address } => {
            let account = account_or_signer(address, &endpoints)?;
            let d = view(
                &client,
                INFERENCE,
                IInference::depositOfCall { account },
                explain,
            )?;
            println!("account        {account}");
            println!("deposit        {} OPEN", format_open(d.balance));
            if !d.withdrawRequested.is_zero() {
                println!(
                    "withdrawing    {} OPEN from block {}",
                    format_open(d.withdrawRequested),
                    d.releaseBlock
                );
            }
            let api = Api::new(&endpoints.api);
            if let Ok(usage) = api.json(
                "usage",
                api.agent
                    .get(api.url(&format!("/v1/usage?account={account}")))
                    .call(),
            ) {
                let owed: U256 = usage["owed"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or_default();
                let records = usage["pending"].as_array().map_or(0, Vec::len);
                println!(
                    "unsettled      {} OPEN in {records} request(s) served by {}",
                    format_open(owed),
                    endpoints.api
                );
            }
        }
        InferenceCommand::ApiKey => {
            let signer = endpoints.signing.require_signer()?;
            let api = Api::new(&endpoints.api);
            let answer = api.post_signed("API key", "/v1/keys", &json!({}), &signer)?;
            println!(
                "{}",
                answer["key"].as_str().context("the node returned no key")?
            );
            eprintln!(
                "API key for {}; requests with it are charged to that account's deposit (operator {})",
                signer.address(),
                answer["operator"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

pub fn earnings(cmd: EarningsCommand, endpoints: Endpoints) -> Result<()> {
    use alloy_sol_types::SolCall;
    let client = RpcClient::new(&endpoints.signing.rpc);
    match cmd {
        EarningsCommand::Show {
            address,
            datanet,
            model,
        } => {
            let account = account_or_signer(address, &endpoints)?;
            let total = view(
                &client,
                SETTLEMENT,
                ISettlement::earningsCall { account },
                explain,
            )?;
            let claimable = view(
                &client,
                SETTLEMENT,
                ISettlement::claimableCall { account },
                explain,
            )?;
            println!("account        {account}");
            println!("earned         {} OPEN", format_open(total));
            println!("claimable      {} OPEN", format_open(claimable));
            if let Some(id) = datanet {
                let call = ISettlement::earningsByDatanetCall {
                    account,
                    datanetId: id,
                };
                let v = view(&client, SETTLEMENT, call, explain)?;
                println!("from datanet {id}: {} OPEN", format_open(v));
            }
            if let Some(id) = model {
                let call = ISettlement::earningsByModelCall {
                    account,
                    modelId: id,
                };
                let v = view(&client, SETTLEMENT, call, explain)?;
                println!("from model {id}: {} OPEN", format_open(v));
            }
        }
        EarningsCommand::Claim => {
            let signer = endpoints.signing.require_signer()?;
            let receipt = transact(
                &client,
                &signer,
                SETTLEMENT,
                ISettlement::claimCall {}.abi_encode(),
                U256::ZERO,
                explain,
            )?;
            let e: ISettlement::Claimed = event(&receipt)?;
            println!("claimed {} OPEN", format_open(e.amount));
        }
    }
    Ok(())
}
