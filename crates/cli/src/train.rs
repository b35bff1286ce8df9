//! `openledger train …` and `openledger jobs …`: LoRA fine-tunes run by the node's factory.
//!
//! `train` queues a job (signed by its owner, who must be able to read the datanet) and
//! follows its progress stream; the job runs in the node and never depends on this command
//! staying attached. `jobs publish` records a finished job on the `Models` precompile.

use std::io::BufRead;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolInterface};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use openledger_chain::modules::models::IModels;
use openledger_dataservice::auth;
use openledger_factory::api::signed_target;
use openledger_factory::{DataOptions, JobRecord, JobSpec, LossOn};
use openledger_llm::train::{Schedule, TrainConfig};
use openledger_primitives::U256;
use openledger_primitives::addresses::MODELS;
use openledger_wallet::RpcClient;
use serde_json::Value;

use crate::chaintx::event;
use crate::datanet::{Api, Endpoints, now, view};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The datanet snapshot to train on: DATANET@SNAPSHOT (ids), or DATANET for its latest.
    #[arg(long)]
    pub datanet: String,
    /// Base model: a model-store name or hash.
    #[arg(long, default_value = openledger_llm::DEFAULT_MODEL)]
    pub base: String,
    /// Name of the fine-tune (default job-N).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Scale by alpha/√rank (rsLoRA) instead of alpha/rank.
    #[arg(long)]
    pub rslora: bool,
    /// Layers to adapt (PEFT names), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub targets: Vec<String>,
    #[arg(long = "lr", default_value_t = 2e-4)]
    pub learning_rate: f64,
    #[arg(long, value_parser = parse_schedule, default_value = "cosine")]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 10)]
    pub warmup_steps: u64,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 4)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// One example per sequence instead of packing several.
    #[arg(long)]
    pub no_packing: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    /// Stop after this many evaluations without improvement (0 = never).
    #[arg(long, default_value_t = 0)]
    pub patience: u32,
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Compute the loss on every token, not only the answers.
    #[arg(long)]
    pub loss_on_all: bool,
    /// Queue the job and return without following it.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    match s {
        "constant" => Ok(Schedule::Constant),
        "linear" => Ok(Schedule::Linear),
        "cosine" => Ok(Schedule::Cosine),
        other => Err(format!("{other:?}: use constant, linear or cosine")),
    }
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List the node's training jobs.
    List,
    /// Show one job: status, progress, evaluation, result.
    Show { id: u64 },
    /// Follow a job's progress until it ends.
    Follow { id: u64 },
    /// Cancel a queued or running job (it stops at a checkpoint and can be resumed).
    Cancel { id: u64 },
    /// Resume a cancelled or failed job from its last checkpoint.
    Resume { id: u64 },
    /// Publish a completed job's adapter on the Models precompile.
    Publish {
        id: u64,
        /// Price per 1,000 tokens, in OPEN.
        #[arg(long, default_value = "0")]
        price: String,
        /// Name on chain (default: the job's name).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Splits `DATANET@SNAPSHOT`.
fn parse_datanet(s: &str) -> Result<(u64, Option<u64>)> {
    let (datanet, snapshot) = match s.split_once('@') {
        Some((d, s)) => (d, Some(s)),
        None => (s, None),
    };
    let datanet = datanet
        .parse()
        .with_context(|| format!("--datanet {s:?}: expected DATANET@SNAPSHOT, e.g. 1@3"))?;
    let snapshot = snapshot
        .map(str::parse)
        .transpose()
        .with_context(|| format!("--datanet {s:?}: the snapshot id is not a number"))?;
    Ok((datanet, snapshot))
}

impl Api {
    /// A POST signed by `signer` over the path and the body's hash (the factory's writes).
    pub(crate) fn post_signed(
        &self,
        what: &str,
        path: &str,
        body: &Value,
        signer: &PrivateKeySigner,
    ) -> Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let expires = now() + 300;
        let message = auth::request_message(
            "POST",
            &signed_target(path, &bytes),
            signer.address(),
            expires,
        );
        let signature = signer
            .sign_message_sync(message.as_bytes())
            .context("cannot sign the request")?;
        let request = self
            .agent
            .post(self.url(path))
            .header("content-type", "application/json")
            .header(auth::ADDRESS_HEADER, signer.address().to_string())
            .header(auth::EXPIRES_HEADER, expires.to_string())
            .header(
                auth::SIGNATURE_HEADER,
                format!("0x{}", alloy_primitives::hex::encode(signature.as_bytes())),
            );
        self.json(what, request.send(&bytes[..]))
    }
}

pub fn train(args: TrainArgs) -> Result<()> {
    let signer = args.endpoints.signing.require_signer()?;
    let api = Api::new(&args.endpoints.api);
    let (datanet_id, snapshot) = parse_datanet(&args.datanet)?;
    let snapshot_id = match snapshot {
        Some(id) => id,
        None => latest_snapshot(&args.endpoints, datanet_id)?,
    };
    let spec = JobSpec {
        base_model: args.base.clone(),
        datanet_id: Some(datanet_id),
        snapshot_id,
        name: args.name.clone(),
        train: TrainConfig {
            rank: args.rank,
            alpha: args.alpha,
            dropout: args.dropout,
            rslora: args.rslora,
            targets: args.targets.clone(),
            learning_rate: args.learning_rate,
            schedule: args.schedule,
            warmup_steps: args.warmup_steps,
            epochs: args.epochs,
            max_steps: args.max_steps,
            micro_batch: args.batch,
            grad_accum: args.grad_accum,
            max_grad_norm: args.max_grad_norm,
            weight_decay: args.weight_decay,
            seq_len: args.seq_len,
            packing: !args.no_packing,
            seed: args.seed,
            eval_every: args.eval_every,
            early_stopping_patience: args.patience,
            checkpoint_every: args.checkpoint_every,
            ..TrainConfig::default()
        },
        data: DataOptions {
            eval_fraction: args.eval_fraction,
            loss_on: if args.loss_on_all {
                LossOn::All
            } else {
                LossOn::Responses
            },
            ..DataOptions::default()
        },
    };
    let record: JobRecord = serde_json::from_value(api.post_signed(
        "queueing the job",
        "/v1/jobs",
        &serde_json::to_value(&spec)?,
        &signer,
    )?)?;
    println!(
        "job {} queued: {} on datanet {datanet_id} snapshot {snapshot_id} (root {})",
        record.id, record.spec.base_model, record.snapshot_root
    );
    if args.detach {
        println!("follow it with `openledger jobs follow {}`", record.id);
        return Ok(());
    }
    follow(&api, record.id)
}

/// The latest snapshot of a datanet, from the chain.
fn latest_snapshot(endpoints: &Endpoints, datanet_id: u64) -> Result<u64> {
    use openledger_chain::modules::datanets::IDatanets;
    use openledger_primitives::addresses::DATANETS;
    let client = RpcClient::new(endpoints.signing.rpc.clone());
    let count = view(&client, DATANETS, IDatanets::snapshotCountCall {})?;
    for id in (1..=count).rev() {
        let snapshot = view(
            &client,
            DATANETS,
            IDatanets::getSnapshotCall { snapshotId: id },
        )?;
        if snapshot.datanetId == datanet_id {
            return Ok(id);
        }
    }
    bail!(
        "datanet {datanet_id} has no published snapshot yet; publish one with `openledger datanet snapshot {datanet_id}`"
    )
}

/// Streams a job's events until it ends, drawing a progress bar.
fn follow(api: &Api, id: u64) -> Result<()> {
    let response = api
        .agent
        .get(api.url(&format!("/v1/jobs/{id}/events")))
        .header("accept", "text/event-stream")
        .call()
        .with_context(|| format!("cannot reach the node at {}", api.base))?;
    if !response.status().is_success() {
        let body = api.json("following the job", Ok(response))?;
        bail!("following job {id}: unexpected answer {body}");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut ended = None;
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    for line in reader.lines() {
        let line = line.context("the progress stream broke; the job keeps running")?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let event: Value = serde_json::from_str(data.trim())?;
        match event["kind"].as_str() {
            Some("step") => {
                bar.set_length(event["total_steps"].as_u64().unwrap_or(0));
                bar.set_position(event["step"].as_u64().unwrap_or(0));
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.0} tok/s",
                    event["loss"].as_f64().unwrap_or(f64::NAN),
                    event["learning_rate"].as_f64().unwrap_or(0.0),
                    event["tokens_per_second"].as_f64().unwrap_or(0.0)
                ));
            }
            // Printed above the bar (and also when stdout is not a terminal).
            Some("eval") => bar.suspend(|| {
                println!(
                    "  step {}: eval loss {:.4}, perplexity {:.2}",
                    event["step"],
                    event["loss"].as_f64().unwrap_or(f64::NAN),
                    event["perplexity"].as_f64().unwrap_or(f64::NAN)
                )
            }),
            Some("resumed") => {
                bar.suspend(|| println!("  resumed from the checkpoint at step {}", event["step"]))
            }
            Some("status") => {
                let status = event["status"].as_str().unwrap_or("?").to_string();
                bar.suspend(|| println!("  job {id} is {status}"));
                if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                    ended = Some(status);
                    break;
                }
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    let record: JobRecord =
        serde_json::from_value(api.get("reading the job", &format!("/v1/jobs/{id}"), None)?)?;
    print_record(&record);
    match ended.as_deref() {
        Some("completed") => Ok(()),
        Some("failed") => bail!("job {id} failed: {}", record.error.unwrap_or_default()),
        Some(status) => bail!("job {id} is {status}; `openledger jobs resume {id}` continues it"),
        None => bail!("the progress stream ended early; job {id} keeps running in the node"),
    }
}

fn print_record(job: &JobRecord) {
    println!(
        "job {} \"{}\" — {:?}, owner {}",
        job.id, job.name, job.status, job.owner
    );
    println!(
        "  base {}, datanet {} snapshot {} (root {})",
        job.spec.base_model, job.datanet_id, job.spec.snapshot_id, job.snapshot_root
    );
    if let Some(p) = &job.progress {
        println!(
            "  step {}/{}, epoch {:.2}, loss {:.4}, {:.0} tokens/s",
            p.step, p.total_steps, p.epoch, p.loss, p.tokens_per_second
        );
    }
    if let Some(error) = &job.error {
        println!("  error: {error}");
    }
    if let Some(result) = &job.result {
        let e = &result.evaluation;
        if let (Some(base), Some(tuned)) = (e.base, e.adapter) {
            println!(
                "  held-out loss {:.4} → {:.4}, perplexity {:.2} → {:.2}",
                base.loss, tuned.loss, base.perplexity, tuned.perplexity
            );
        }
        for answer in &e.answers {
            println!("  Q: {}", answer.prompt);
            println!("     reference: {}", answer.reference);
            println!("     base:      {}", answer.base.trim());
            println!("     adapter:   {}", answer.adapter.trim());
        }
        println!("  adapter  {}", result.adapter_hash);
        println!("  manifest {}", result.manifest_hash);
    }
}

pub fn run(command: JobsCommand, endpoints: Endpoints) -> Result<()> {
    let api = Api::new(&endpoints.api);
    let job = |id: u64| -> Result<JobRecord> {
        Ok(serde_json::from_value(api.get(
            "reading the job",
            &format!("/v1/jobs/{id}"),
            None,
        )?)?)
    };
    match command {
        JobsCommand::List => {
            let list = api.get("listing jobs", "/v1/jobs", None)?;
            let jobs: Vec<JobRecord> = serde_json::from_value(list["jobs"].clone())?;
            if jobs.is_empty() {
                println!("no jobs yet; start one with `openledger train --datanet ID@SNAPSHOT`");
            }
            for j in jobs {
                let step = j.progress.as_ref().map_or(String::new(), |p| {
                    format!(" step {}/{}", p.step, p.total_steps)
                });
                println!(
                    "{:>4}  {:<10} {:<24} datanet {}@{}{step}",
                    j.id,
                    format!("{:?}", j.status).to_lowercase(),
                    j.name,
                    j.datanet_id,
                    j.spec.snapshot_id
                );
            }
        }
        JobsCommand::Show { id } => print_record(&job(id)?),
        JobsCommand::Follow { id } => follow(&api, id)?,
        JobsCommand::Cancel { id } | JobsCommand::Resume { id } => {
            let signer = endpoints.signing.require_signer()?;
            let action = if matches!(command, JobsCommand::Cancel { .. }) {
                "cancel"
            } else {
                "resume"
            };
            let record: JobRecord = serde_json::from_value(api.post_signed(
                &format!("{action} job {id}"),
                &format!("/v1/jobs/{id}/{action}"),
                &Value::Null,
                &signer,
            )?)?;
            println!("job {id} is {:?}", record.status);
        }
        JobsCommand::Publish { id, price, name } => publish(&endpoints, job(id)?, &price, name)?,
    }
    Ok(())
}

/// Records a completed job on the `Models` precompile (registering its base model first if
/// the chain does not know it yet).
fn publish(endpoints: &Endpoints, job: JobRecord, price: &str, name: Option<String>) -> Result<()> {
    let Some(result) = &job.result else {
        bail!(
            "job {} is {:?}: only completed jobs can be published",
            job.id,
            job.status
        );
    };
    let signer = endpoints.signing.require_signer()?;
    if signer.address() != job.owner {
        bail!(
            "job {} belongs to {}; publish it with that account",
            job.id,
            job.owner
        );
    }
    let price = openledger_primitives::units::parse_open(price)
        .with_context(|| format!("--price {price:?} is not an amount of OPEN"))?;
    let client = RpcClient::new(endpoints.signing.rpc.clone());
    if !base_model_registered(&client, result.base_model_hash)? {
        send_models(
            &client,
            &signer,
            IModels::registerBaseModelCall {
                modelHash: result.base_model_hash,
                name: job.spec.base_model.clone(),
            }
            .abi_encode(),
        )?;
        println!(
            "registered base model {} ({})",
            job.spec.base_model, result.base_model_hash
        );
    }
    let receipt = send_models(
        &client,
        &signer,
        IModels::publishModelCall {
            name: name.unwrap_or_else(|| job.name.clone()),
            baseModelHash: result.base_model_hash,
            adapterHash: result.adapter_hash,
            manifestHash: result.manifest_hash,
            snapshotIds: result.snapshot_ids.clone(),
            hyperparamsHash: result.hyperparams_hash,
            evalLossMilli: result.eval_loss_milli,
            evalPerplexityMilli: result.eval_perplexity_milli,
            pricePer1kTokens: price,
        }
        .abi_encode(),
    )?;
    let published: IModels::ModelPublished = event(&receipt)?;
    println!(
        "published model {} \"{}\" (adapter {}, tx {})",
        published.modelId,
        published.name,
        published.adapterHash,
        receipt["transactionHash"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Whether the Models precompile knows base model `hash` (it reverts with `UnknownBaseModel`
/// when it does not).
fn base_model_registered(client: &RpcClient, hash: openledger_primitives::B256) -> Result<bool> {
    let call = IModels::baseModelCall { modelHash: hash };
    let answer: Result<String, _> = client.call(
        "eth_call",
        serde_json::json!([{ "to": MODELS, "data": format!("0x{}", alloy_primitives::hex::encode(call.abi_encode())) }, "latest"]),
    );
    match answer {
        Ok(_) => Ok(true),
        Err(e) => match e
            .revert_data()
            .and_then(|data| IModels::IModelsErrors::abi_decode(&data).ok())
        {
            Some(IModels::IModelsErrors::UnknownBaseModel(_)) => Ok(false),
            _ => Err(e.into()),
        },
    }
}

fn send_models(client: &RpcClient, signer: &PrivateKeySigner, input: Vec<u8>) -> Result<Value> {
    crate::chaintx::transact(client, signer, MODELS, input, U256::ZERO, explain_models)
}

fn explain_models(e: openledger_wallet::RpcError) -> anyhow::Error {
    match e
        .revert_data()
        .and_then(|data| IModels::IModelsErrors::abi_decode(&data).ok())
    {
        Some(error) => anyhow::anyhow!("the Models precompile refused: {}", describe(&error)),
        None => e.into(),
    }
}

fn describe(error: &IModels::IModelsErrors) -> String {
    use IModels::IModelsErrors as E;
    match error {
        E::UnknownBaseModel(e) => format!("base model {} is not registered", e.modelHash),
        E::BaseModelExists(e) => format!("base model {} is already registered", e.modelHash),
        E::UnknownModel(e) => format!("there is no model {}", e.modelId),
        E::AdapterAlreadyPublished(e) => format!(
            "adapter {} is already published as model {}",
            e.adapterHash, e.modelId
        ),
        E::UnknownSnapshot(e) => format!("snapshot {} is not published", e.snapshotId),
        E::NotModelOwner(e) => format!("{} does not own this model", e.caller),
        E::ModelIsRetired(e) => format!("model {} is retired", e.modelId),
        E::InvalidArgument(e) => format!("invalid argument: {}", e.what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datanet_arguments_name_both_ids_or_one() {
        assert_eq!(parse_datanet("3@7").unwrap(), (3, Some(7)));
        assert_eq!(parse_datanet("3").unwrap(), (3, None));
        assert!(
            parse_datanet("x@7")
                .unwrap_err()
                .to_string()
                .contains("DATANET@SNAPSHOT")
        );
        assert!(
            parse_datanet("3@y")
                .unwrap_err()
                .to_string()
                .contains("snapshot id")
        );
    }
}
