//! `openledger datanet …`: create a datanet, contribute files, review, snapshot, export,
//! request and grant access, verify a row — against a running node.
//!
//! Chain actions are transactions to the `Datanets` precompile signed here (so they are the
//! same ones `cast send` makes); data goes through the node's data service API.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolInterface};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use openledger_chain::modules::datanets::IDatanets;
use openledger_chain::modules::protocol_params::IProtocolParams;
use openledger_datanet::merkle::{InclusionProof, row_hash};
use openledger_datanet::pipeline::{PiiPolicy, Policy};
use openledger_datanet::row::{Row, Schema};
use openledger_dataservice::auth;
use openledger_dataservice::ingest::{Format, files_under};
use openledger_dataservice::service::{ContributionRecord, Description, Report, SnapshotDraft};
use openledger_primitives::addresses::{DATANETS, PROTOCOL_PARAMS};
use openledger_primitives::{Address, B256, U256};
use openledger_wallet::{RpcClient, RpcError};
use serde_json::{Value, json};

use crate::chaintx::Signing;

/// Where the node is (JSON-RPC and the data API) and how to sign.
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    #[command(flatten)]
    pub signing: Signing,
    /// The node's data service API URL.
    #[arg(
        long,
        env = "OPENLEDGER_API",
        default_value = "http://127.0.0.1:8550",
        global = true
    )]
    pub api: String,
}

#[derive(Subcommand, Debug)]
pub enum DatanetCommand {
    /// Create a datanet (pays the creation fee set by governance).
    Create {
        #[arg(long)]
        name: String,
        /// SPDX licence of the rows, e.g. CC-BY-4.0.
        #[arg(long)]
        license: String,
        /// text, instruction or chat.
        #[arg(long, default_value = "text", value_parser = parse_schema)]
        schema: Schema,
        #[arg(long, default_value = "")]
        description: String,
        /// What to do with rows holding personal data: redact or reject.
        #[arg(long, default_value = "redact", value_parser = parse_pii)]
        pii: PiiPolicy,
        /// Near-duplicate threshold (estimated Jaccard of word 5-shingles).
        #[arg(long, default_value_t = openledger_datanet::pipeline::DEFAULT_NEAR_DUP_THRESHOLD)]
        near_dup: f64,
        /// Minimum quality score (0–100).
        #[arg(long, default_value_t = 50)]
        min_quality: u8,
        /// Only accounts with a grant may read rows.
        #[arg(long)]
        permissioned: bool,
        /// Only allowlisted accounts may contribute.
        #[arg(long)]
        allowlist: bool,
        /// Curator verdicts needed to accept or reject a contribution.
        #[arg(long, default_value_t = 1)]
        quorum: u16,
        /// A curator (repeat for more); the creator is the only one if none is given.
        #[arg(long = "curator")]
        curators: Vec<Address>,
    },
    /// Upload a file or directory (JSONL, CSV, Parquet, .txt, .md) and record it on chain.
    Contribute {
        #[arg(long)]
        datanet: u64,
        path: PathBuf,
        /// Upload and seal, but do not send the `contribute` transaction.
        #[arg(long)]
        no_submit: bool,
    },
    /// A curator's verdict on a contribution.
    Review {
        contribution: u64,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        accept: bool,
        #[arg(long)]
        reject: bool,
        /// Reason code recorded with the verdict (see `RejectCode::reason_code`).
        #[arg(long, default_value_t = 0)]
        reason: u16,
    },
    /// Build the snapshot of all accepted rows and publish its root on chain (owner only).
    Snapshot {
        #[arg(long)]
        datanet: u64,
    },
    /// Download a published snapshot: rows.jsonl, rows.parquet, README.md (card), card.json.
    Export {
        #[arg(long)]
        snapshot: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Ask the owner of a permissioned datanet for read access.
    RequestAccess {
        #[arg(long)]
        datanet: u64,
        #[arg(long)]
        purpose: String,
    },
    /// Grant read access until an expiry (owner only).
    Grant {
        #[arg(long)]
        datanet: u64,
        #[arg(long)]
        to: Address,
        /// Days from now.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Revoke read access (owner only).
    Revoke {
        #[arg(long)]
        datanet: u64,
        #[arg(long)]
        from: Address,
    },
    /// Check that a row is in a published snapshot, against the root on chain.
    VerifyRow {
        #[arg(long)]
        snapshot: u64,
        /// The row's hash (as in rows.jsonl: BLAKE3 of the line).
        #[arg(long, conflicts_with = "row", required_unless_present = "row")]
        row_hash: Option<B256>,
        /// The row itself, as its rows.jsonl line.
        #[arg(long)]
        row: Option<String>,
    },
}

fn parse_schema(s: &str) -> Result<Schema, String> {
    Schema::parse(s).ok_or_else(|| format!("unknown schema {s:?}; use text, instruction or chat"))
}

fn parse_pii(s: &str) -> Result<PiiPolicy, String> {
    match s {
        "redact" => Ok(PiiPolicy::Redact),
        "reject" => Ok(PiiPolicy::Reject),
        _ => Err(format!("unknown PII policy {s:?}; use redact or reject")),
    }
}

/// The node's data service API, with optional request signing.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) agent: ureq::Agent,
}

impl Api {
    pub(crate) fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Turns a response into its JSON body, or an error carrying the API's message.
    pub(crate) fn json(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let mut response = response.with_context(|| {
            format!(
                "cannot reach the data service at {} — is `openledger up` running?",
                self.base
            )
        })?;
        let status = response.status();
        let body: Value = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_json()
            .with_context(|| {
                format!("{what}: the data service sent a non-JSON answer ({status})")
            })?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("unknown error");
            if let Some(details) = body["error"].get("details") {
                print_report(&serde_json::from_value(details.clone()).unwrap_or_default());
            }
            bail!("{what}: {message} (HTTP {status})");
        }
        Ok(body)
    }

    pub(crate) fn post(&self, what: &str, path: &str, body: Value) -> Result<Value> {
        self.json(what, self.agent.post(self.url(path)).send_json(body))
    }

    /// A GET, signed when a signer is given (permissioned datanets need it).
    fn get_request(
        &self,
        path: &str,
        signer: Option<&PrivateKeySigner>,
    ) -> Result<ureq::RequestBuilder<ureq::typestate::WithoutBody>> {
        let mut request = self.agent.get(self.url(path));
        if let Some(signer) = signer {
            let expires = now() + 300;
            let message = auth::request_message("GET", path, signer.address(), expires);
            let signature = signer
                .sign_message_sync(message.as_bytes())
                .context("cannot sign the request")?;
            request = request
                .header(auth::ADDRESS_HEADER, signer.address().to_string())
                .header(auth::EXPIRES_HEADER, expires.to_string())
                .header(
                    auth::SIGNATURE_HEADER,
                    format!("0x{}", alloy_primitives::hex::encode(signature.as_bytes())),
                );
        }
        Ok(request)
    }

    pub(crate) fn get(
        &self,
        what: &str,
        path: &str,
        signer: Option<&PrivateKeySigner>,
    ) -> Result<Value> {
        let request = self.get_request(path, signer)?;
        self.json(what, request.call())
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends a call to the Datanets precompile; reverts are decoded into the precompile's error.
fn transact(
    client: &RpcClient,
    signer: &PrivateKeySigner,
    input: Vec<u8>,
    value: U256,
) -> Result<Value> {
    crate::chaintx::transact(client, signer, DATANETS, input, value, explain_revert)
}

fn explain_revert(e: RpcError) -> anyhow::Error {
    let decoded = e
        .revert_data()
        .and_then(|data| IDatanets::IDatanetsErrors::abi_decode(&data).ok());
    match decoded {
        Some(error) => anyhow::anyhow!("the Datanets precompile refused: {}", describe(&error)),
        None => e.into(),
    }
}

fn describe(error: &IDatanets::IDatanetsErrors) -> String {
    use IDatanets::IDatanetsErrors as E;
    match error {
        E::UnknownDatanet(e) => format!("datanet {} does not exist", e.datanetId),
        E::UnknownContribution(e) => format!("contribution {} does not exist", e.contributionId),
        E::UnknownSnapshot(e) => format!("snapshot {} does not exist", e.snapshotId),
        E::NotOwner(e) => format!("{} is not the datanet's owner", e.caller),
        E::NotCurator(e) => format!("{} is not a curator of this datanet", e.caller),
        E::NotAllowedToContribute(e) => {
            format!(
                "{} is not on this datanet's contributor allowlist",
                e.caller
            )
        }
        E::DatanetIsClosed(e) => format!("datanet {} is closed", e.datanetId),
        E::NotGovernance(e) => format!("{} is not the governance module", e.caller),
        E::ContributionNotAccepted(e) => {
            format!("contribution {} is not accepted", e.contributionId)
        }
        E::AlreadyReviewed(e) => format!(
            "{} already reviewed contribution {}",
            e.curator, e.contributionId
        ),
        E::ContributionNotPending(e) => {
            format!("contribution {} is no longer pending", e.contributionId)
        }
        E::WrongFee(e) => format!("fee {} wei paid, {} wei required", e.paid, e.required),
        E::InvalidArgument(e) => format!("invalid argument: {}", e.what),
    }
}

use crate::chaintx::event;

pub(crate) fn view<C: SolCall>(client: &RpcClient, to: Address, call: C) -> Result<C::Return> {
    crate::chaintx::view(client, to, call, explain_revert)
}

fn print_report(report: &Report) {
    println!(
        "  {} records read from {} file(s): {} accepted ({} with PII redacted), {} rejected",
        report.records,
        report.files,
        report.accepted,
        report.redacted,
        report.records - report.accepted
    );
    for (code, n) in &report.rejected {
        println!("    {n:>8} {code}");
    }
    for r in report.rejections.iter().take(10) {
        println!("    {}: {}", r.location, r.rejection.message);
    }
    if report.rejections.len() > 10 {
        println!("    … the API report lists up to 100");
    }
}

fn bytes_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

pub fn run(cmd: DatanetCommand, endpoints: Endpoints) -> Result<()> {
    let client = RpcClient::with_timeout(&endpoints.signing.rpc, Duration::from_secs(60));
    let api = Api::new(&endpoints.api);
    match cmd {
        DatanetCommand::Create {
            name,
            license,
            schema,
            description,
            pii,
            near_dup,
            min_quality,
            permissioned,
            allowlist,
            quorum,
            curators,
        } => {
            let signer = endpoints.signing.require_signer()?;
            if !(0.0..=1.0).contains(&near_dup) {
                bail!("--near-dup must be between 0 and 1, got {near_dup}");
            }
            let doc = Description {
                description,
                policy: Policy {
                    pii,
                    near_dup_threshold: near_dup,
                    min_quality,
                    ..Policy::default()
                },
            };
            let stored = api.post(
                "storing the description",
                "/v1/descriptions",
                serde_json::to_value(&doc)?,
            )?;
            let description_hash: B256 =
                serde_json::from_value(stored["description_hash"].clone())?;
            let fee = view(
                &client,
                PROTOCOL_PARAMS,
                IProtocolParams::getCall {
                    name: openledger_chain::modules::datanets::CREATION_FEE_PARAM.into(),
                },
            )?;
            let curators = if curators.is_empty() {
                vec![signer.address()]
            } else {
                curators
            };
            let call = IDatanets::createDatanetCall {
                name: name.clone(),
                descriptionHash: description_hash,
                license,
                schema: schema.code(),
                permissioned,
                allowlistOnly: allowlist,
                reviewQuorum: quorum,
                curators,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), fee)?;
            let created: IDatanets::DatanetCreated = event(&receipt)?;
            println!("datanet {} created: {name}", created.datanetId);
            println!(
                "  owner {}; creation fee {} OPEN",
                signer.address(),
                openledger_wallet::format_open(fee)
            );
            println!("  description {description_hash}");
            println!(
                "  transaction {}",
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Contribute {
            datanet,
            path,
            no_submit,
        } => {
            let signer = if no_submit {
                None
            } else {
                Some(endpoints.signing.require_signer()?)
            };
            let files = files_under(&path)?;
            let (files, skipped): (Vec<PathBuf>, Vec<PathBuf>) = files
                .into_iter()
                .partition(|f| Format::from_path(f).is_some());
            for f in &skipped {
                eprintln!(
                    "skipping {} (not .jsonl, .csv, .parquet, .txt or .md)",
                    f.display()
                );
            }
            if files.is_empty() {
                bail!(
                    "{} holds no file to upload (.jsonl, .csv, .parquet, .txt, .md)",
                    path.display()
                );
            }
            let started = api.post(
                "starting the upload",
                &format!("/v1/datanets/{datanet}/uploads"),
                json!({}),
            )?;
            let upload = started["upload_id"]
                .as_str()
                .context("no upload id")?
                .to_string();
            let total: u64 = files
                .iter()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum();
            let bar = bytes_bar(total, "uploading");
            let base = if path.is_dir() {
                path.as_path()
            } else {
                path.parent().unwrap_or(Path::new(""))
            };
            for file in &files {
                let name = file
                    .strip_prefix(base)
                    .unwrap_or(file)
                    .to_string_lossy()
                    .replace('\\', "/");
                let handle = std::fs::File::open(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let mut reader = bar.wrap_read(handle);
                let url = api.url(&format!("/v1/uploads/{upload}/files/{name}"));
                let response = api
                    .agent
                    .put(url)
                    .send(ureq::SendBody::from_reader(&mut reader as &mut dyn Read));
                let report = api.json(&format!("uploading {name}"), response);
                if let Err(e) = report {
                    bar.abandon();
                    let _ = api
                        .agent
                        .delete(api.url(&format!("/v1/uploads/{upload}")))
                        .call();
                    return Err(e);
                }
            }
            bar.finish_and_clear();
            let sealed = api.post(
                "sealing the upload",
                &format!("/v1/uploads/{upload}/seal"),
                json!({}),
            )?;
            let record: ContributionRecord = serde_json::from_value(sealed)?;
            println!("upload sealed: content root {}", record.content_root);
            print_report(&record.report);
            println!(
                "  {} rows, {} bytes stored",
                record.row_count, record.byte_count
            );
            let Some(signer) = signer else {
                println!(
                    "not submitted (--no-submit); record it with contribute({datanet}, {}, {}, {})",
                    record.content_root, record.row_count, record.byte_count
                );
                return Ok(());
            };
            let call = IDatanets::contributeCall {
                datanetId: datanet,
                contentRoot: record.content_root,
                rowCount: record.row_count,
                byteCount: record.byte_count,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            let contributed: IDatanets::Contributed = event(&receipt)?;
            println!(
                "contribution {} recorded on chain by {} (transaction {})",
                contributed.contributionId,
                signer.address(),
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Review {
            contribution,
            accept,
            reject: _,
            reason,
        } => {
            let signer = endpoints.signing.require_signer()?;
            let call = IDatanets::reviewCall {
                contributionId: contribution,
                accept,
                reasonCode: reason,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            let c = view(
                &client,
                DATANETS,
                IDatanets::getContributionCall {
                    contributionId: contribution,
                },
            )?;
            let status = match c.status {
                1 => "accepted",
                2 => "rejected",
                _ => "pending",
            };
            println!(
                "{} contribution {contribution} ({} approvals, {} rejections): now {status}",
                if accept { "approved" } else { "rejected" },
                c.approvals,
                c.rejections
            );
            println!(
                "  transaction {}",
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Snapshot { datanet } => {
            let signer = endpoints.signing.require_signer()?;
            let built = api.post(
                "building the snapshot",
                &format!("/v1/datanets/{datanet}/snapshots"),
                json!({}),
            )?;
            let draft: SnapshotDraft = serde_json::from_value(built)?;
            let call = IDatanets::publishSnapshotCall {
                datanetId: datanet,
                root: draft.root,
                rowCount: draft.row_count,
                parentSnapshotId: draft.parent_snapshot_id,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            let published: IDatanets::SnapshotPublished = event(&receipt)?;
            println!(
                "snapshot {} of datanet {datanet} published: {} rows from {} contributions, root {}",
                published.snapshotId, draft.row_count, draft.contributions, draft.root
            );
            println!(
                "  parent snapshot {}; transaction {}",
                draft.parent_snapshot_id,
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Export { snapshot, out } => {
            let signer = endpoints.signing.signer()?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for file in ["card.json", "README.md", "rows.jsonl", "rows.parquet"] {
                let path = format!("/v1/snapshots/{snapshot}/export/{file}");
                let mut response = api
                    .get_request(&path, signer.as_ref())?
                    .call()
                    .with_context(|| format!("cannot reach the data service at {}", api.base))?;
                if !response.status().is_success() {
                    let status = response.status();
                    let body: Value = response.body_mut().read_json().unwrap_or_default();
                    bail!(
                        "export of snapshot {snapshot}: {} (HTTP {status})",
                        body["error"]["message"].as_str().unwrap_or("unknown error")
                    );
                }
                let len = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                let bar = bytes_bar(len, file);
                let target = out.join(file);
                let tmp = out.join(format!(".{file}.part"));
                let mut sink = std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                let mut body = bar.wrap_read(response.into_body().into_reader());
                std::io::copy(&mut body, &mut sink)
                    .with_context(|| format!("download of {file} broke off"))?;
                sink.sync_all()?;
                std::fs::rename(&tmp, &target)?;
                bar.finish_and_clear();
                println!("  {}", target.display());
            }
            println!("snapshot {snapshot} exported to {}", out.display());
        }
        DatanetCommand::RequestAccess { datanet, purpose } => {
            let signer = endpoints.signing.require_signer()?;
            let call = IDatanets::requestAccessCall {
                datanetId: datanet,
                purpose,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            println!(
                "access to datanet {datanet} requested by {} (transaction {}); the owner grants it with `openledger datanet grant`",
                signer.address(),
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Grant { datanet, to, days } => {
            let signer = endpoints.signing.require_signer()?;
            let expires = now() + days.checked_mul(86_400).context("--days is too large")?;
            let call = IDatanets::grantAccessCall {
                datanetId: datanet,
                grantee: to,
                expiresAt: expires,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            println!(
                "{to} may read datanet {datanet} until unix time {expires} (transaction {})",
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::Revoke { datanet, from } => {
            let signer = endpoints.signing.require_signer()?;
            let call = IDatanets::revokeAccessCall {
                datanetId: datanet,
                grantee: from,
            };
            let receipt = transact(&client, &signer, call.abi_encode(), U256::ZERO)?;
            println!(
                "{from} may no longer read datanet {datanet} (transaction {})",
                receipt["transactionHash"].as_str().unwrap_or("?")
            );
        }
        DatanetCommand::VerifyRow {
            snapshot,
            row_hash: hash,
            row,
        } => {
            let hash = match (hash, row) {
                (Some(h), _) => h,
                (None, Some(line)) => {
                    // Accept the line as exported, or any JSON of the same row.
                    let parsed: Row =
                        serde_json::from_str(&line).context("--row is not a row's JSON line")?;
                    row_hash(&parsed.canonical())
                }
                (None, None) => bail!("give --row-hash or --row"),
            };
            let on_chain = view(
                &client,
                DATANETS,
                IDatanets::getSnapshotCall {
                    snapshotId: snapshot,
                },
            )?;
            let signer = endpoints.signing.signer()?;
            let answer = api.get(
                "fetching the proof",
                &format!("/v1/snapshots/{snapshot}/proof/{hash}"),
                signer.as_ref(),
            )?;
            let proof: InclusionProof =
                serde_json::from_value(answer["proof"].clone()).context("malformed proof")?;
            if proof.row != hash {
                bail!(
                    "the node sent a proof for row {} instead of {hash}",
                    proof.row
                );
            }
            if !proof.verify(on_chain.root) {
                bail!(
                    "proof FAILED: row {hash} does not lead to snapshot {snapshot}'s on-chain root {}",
                    on_chain.root
                );
            }
            println!(
                "row {hash} is in snapshot {snapshot} of datanet {} (root {} on chain at block {}; {} proof steps)",
                on_chain.datanetId,
                on_chain.root,
                on_chain.blockNumber,
                proof.steps.len()
            );
        }
    }
    Ok(())
}
