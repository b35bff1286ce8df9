//! `openledger up`: a single-node devnet on an embedded store.

use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use anyhow::{Context, Result};
use clap::Args;
use openledger_chain::modules::protocol_params;
use openledger_chain::{ChainSpec, Genesis};
use openledger_node::consensus::Mining;
use openledger_node::rpc::RpcConfig;
use openledger_node::{Node, NodeConfig};
use openledger_primitives::{Address, B256, DEFAULT_CHAIN_ID, U256, units::ONE_OPEN};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openledger_dataservice::{BlobConfig, DataService, RpcLedger, ServiceConfig};
use openledger_wallet::RpcClient;

/// The well-known development mnemonic (also anvil's and hardhat's), so tools that expect its
/// accounts work unchanged. Never use it for real funds.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the chain database and node key live.
    #[arg(long, env = "OPENLEDGER_DATADIR", default_value_os_t = default_datadir())]
    pub datadir: PathBuf,
    /// Interface to serve JSON-RPC (HTTP and WebSocket) on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8545)]
    pub port: u16,
    #[arg(long, default_value_t = DEFAULT_CHAIN_ID)]
    pub chain_id: u64,
    /// Seconds between blocks; 0 seals a block as soon as transactions arrive.
    #[arg(long, default_value_t = 0)]
    pub block_time: u64,
    /// Number of prefunded dev accounts (derived from the mnemonic, m/44'/60'/0'/0/i).
    #[arg(long, default_value_t = 10)]
    pub accounts: u32,
    /// OPEN given to each dev account in genesis.
    #[arg(long, default_value_t = 10_000)]
    pub balance: u64,
    #[arg(long, default_value = DEV_MNEMONIC)]
    pub mnemonic: String,
    /// Port of the data service API (datanet uploads, snapshots, exports) on --host.
    #[arg(long, default_value_t = 8550)]
    pub api_port: u16,
    /// Keep datanet blobs in this S3 bucket instead of the data dir (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "OPENLEDGER_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL for non-AWS services (MinIO, moto), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "OPENLEDGER_S3_ENDPOINT", default_value = "")]
    pub s3_endpoint: String,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Base model to install (if missing) and load at start: a store name, hash or GGUF
    /// path; `none` to run without one.
    #[arg(long, default_value = openledger_llm::DEFAULT_MODEL)]
    pub model: String,
    /// Also serve the PEFT adapters in this directory (one subdirectory each, named by it) on
    /// the OpenAI API, beside the finished fine-tunes.
    #[arg(long)]
    pub adapters: Option<PathBuf>,
    /// Genesis value of a protocol parameter, NAME=VALUE, e.g.
    /// `--param governance.voting_period_blocks=10` (repeat; used when the chain is created).
    #[arg(long = "param", value_parser = parse_genesis_param)]
    pub params: Vec<(String, U256)>,
    /// Seconds between settlement batches of served usage (sent with the node's key).
    #[arg(long, default_value_t = 5)]
    pub settle_interval: u64,
    /// Sequences the OpenAI API decodes together at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// MiB of KV cache the OpenAI API's sequences may hold together; requests wait for memory
    /// and the newest running ones are preempted (and recomputed) when it runs short.
    #[arg(long, default_value_t = 1024)]
    pub kv_memory_mib: usize,
    #[command(flatten)]
    pub models: crate::model::StoreArgs,
}

fn parse_genesis_param(s: &str) -> Result<(String, U256), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let spec = protocol_params::spec_of(name.trim()).ok_or_else(|| {
        let names: Vec<_> = protocol_params::registry().iter().map(|p| p.name).collect();
        format!(
            "no protocol parameter {name:?}; known: {}",
            names.join(", ")
        )
    })?;
    let value: U256 = value
        .trim()
        .parse()
        .map_err(|e| format!("{value:?} is not an integer: {e}"))?;
    if value < spec.min || value > spec.max {
        return Err(format!(
            "{} must be between {} and {}, got {value}",
            spec.name, spec.min, spec.max
        ));
    }
    Ok((spec.name.to_string(), value))
}

/// Refuses genesis overrides that break a rule spanning parameters (the settlement fee split
/// sums to 10,000 bps).
fn check_genesis_params(params: &[(String, U256)]) -> Result<()> {
    let mut split = [U256::ZERO; 4];
    for (value, name) in split.iter_mut().zip(protocol_params::FEE_SPLIT_PARAMS) {
        *value = params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .or_else(|| protocol_params::spec_of(name).map(|s| s.default))
            .unwrap_or_default();
    }
    let split = protocol_params::FeeSplit::from_values(split);
    anyhow::ensure!(
        split.is_whole(),
        "the settlement fee split (--param settlement.*_bps) sums to {} bps; it must sum to 10000",
        split.total_bps()
    );
    Ok(())
}

/// Where the data service keeps blobs: the data dir, or the configured S3 bucket.
fn blob_config(args: &UpArgs) -> BlobConfig {
    match &args.s3_bucket {
        None => BlobConfig::Local {
            root: args.datadir.join("data/blobs"),
        },
        Some(bucket) => BlobConfig::S3 {
            bucket: bucket.clone(),
            endpoint: args.s3_endpoint.clone(),
            region: args.s3_region.clone(),
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
        },
    }
}

pub fn default_datadir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".openledger/devnet")
}

pub fn dev_accounts(mnemonic: &str, count: u32) -> Result<Vec<PrivateKeySigner>> {
    (0..count)
        .map(|i| {
            MnemonicBuilder::<English>::default()
                .phrase(mnemonic)
                .index(i)
                .context("derivation index")?
                .build()
                .context(
                    "cannot derive dev accounts from the mnemonic (is it 12 or 24 valid words?)",
                )
        })
        .collect()
}

/// The key whose address receives this node's priority tips; created on first start.
fn node_key(datadir: &Path) -> Result<PrivateKeySigner> {
    let path = datadir.join("node.key");
    if let Ok(hex) = std::fs::read_to_string(&path) {
        return hex
            .trim()
            .parse()
            .with_context(|| format!("{} is not a valid private key", path.display()));
    }
    let key = PrivateKeySigner::random();
    std::fs::create_dir_all(datadir)
        .with_context(|| format!("cannot create {}", datadir.display()))?;
    std::fs::write(
        &path,
        format!("{}\n", alloy_primitives::hex::encode(key.to_bytes())),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(key)
}

pub fn node_config(
    args: &UpArgs,
    accounts: &[PrivateKeySigner],
    beneficiary: Address,
) -> NodeConfig {
    let balance = ONE_OPEN * U256::from(args.balance);
    // The node's own key settles inference usage, so it needs gas from the start.
    let mut alloc: Vec<(Address, U256)> = accounts.iter().map(|a| (a.address(), balance)).collect();
    if !alloc.iter().any(|(a, _)| *a == beneficiary) {
        alloc.push((beneficiary, balance));
    }
    NodeConfig {
        datadir: args.datadir.clone(),
        spec: ChainSpec::devnet(args.chain_id),
        genesis: Genesis {
            alloc,
            params: args.params.clone(),
            ..Default::default()
        },
        mining: match args.block_time {
            0 => Mining::Instant,
            s => Mining::Interval(Duration::from_secs(s)),
        },
        beneficiary,
        rpc: RpcConfig {
            addr: SocketAddr::new(args.host, args.port),
            ..RpcConfig::default()
        },
    }
}

/// The PEFT adapters under `dir`: each subdirectory holding an `adapter_config.json`, named by
/// the subdirectory (listed anew on each lookup, so adapters copied in later are found).
fn peft_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("adapter_config.json").is_file())
        .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
        .collect()
}

pub fn run(args: UpArgs) -> Result<()> {
    check_genesis_params(&args.params)?;
    let accounts = dev_accounts(&args.mnemonic, args.accounts)?;
    let key = node_key(&args.datadir)?;
    let config = node_config(&args, &accounts, key.address());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        let head = node.chain.head();
        let ledger = RpcLedger::new(RpcClient::new(format!("http://{}", node.rpc_addr)));
        let service_config = ServiceConfig {
            data_dir: args.datadir.join("data"),
            blobs: blob_config(&args),
        };
        let service = DataService::open(&service_config, Arc::new(ledger))
            .context("cannot open the data service")?;
        let api_addr = SocketAddr::new(args.host, args.api_port);
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| {
                format!("cannot listen on {api_addr} for the data API (--api-port)")
            })?;
        let api_addr = listener.local_addr()?;
        let factory = openledger_factory::Factory::open(
            &args.datadir.join("factory"),
            args.models.store(),
            Arc::new(service.clone()),
            Arc::new(service.clone()),
        )
        .context("cannot open the model factory")?;
        // OpenLoRA's OpenAI-compatible API answers 503 until the base model has loaded.
        let serving: openlora::Slot = Default::default();
        let attribution: crate::attribute::AttributorSlot = Default::default();
        // Inference is paid from deposits; the node's key settles what it served.
        let api_keys = Arc::new(crate::billing::ApiKeys::open(
            &args.datadir.join("api-keys.json"),
        )?);
        let usage = Arc::new(
            openlora::UsageLog::open(&args.datadir.join("usage"))
                .context("cannot open the usage log")?,
        );
        let rpc_url = format!("http://{}", node.rpc_addr);
        crate::billing::spawn_settler(
            rpc_url.clone(),
            key.clone(),
            usage.clone(),
            Duration::from_secs(args.settle_interval.max(1)),
        );
        let blobs = service.clone();
        let routes = openledger_dataservice::api::router(service)
            .merge(openledger_factory::api::router(factory.clone()))
            .merge(openlora::router(serving.clone()))
            .merge(crate::billing::router(
                api_keys.clone(),
                usage.clone(),
                key.address(),
            ))
            .merge(crate::gov::router(rpc_url.clone()))
            .merge(crate::attribute::router(
                attribution.clone(),
                serving.clone(),
            ));
        let api = tokio::spawn(async move { axum::serve(listener, routes).await });
        println!("OpenLedger devnet");
        println!("  chain id:    {}", args.chain_id);
        println!("  data dir:    {}", args.datadir.display());
        println!("  head block:  {}", head.header.number);
        println!("  RPC URL:     http://{}", node.rpc_addr);
        println!("  WS URL:      ws://{}", node.rpc_addr);
        println!("  data API:    http://{api_addr}/v1 (datanets, training jobs)");
        println!(
            "  mining:      {}",
            if args.block_time == 0 {
                "instant".to_string()
            } else {
                format!("every {} s", args.block_time)
            }
        );
        println!(
            "\nDev accounts ({} OPEN each at genesis; mnemonic \"{}\"):",
            args.balance, args.mnemonic
        );
        for (i, a) in accounts.iter().enumerate() {
            println!(
                "  ({i}) {}  private key 0x{}",
                a.address(),
                alloy_primitives::hex::encode(a.to_bytes())
            );
        }
        if args.model != "none" {
            let (name, store) = (args.model.clone(), args.models.store());
            let engine_config = openlora::EngineConfig {
                max_batch: args.max_batch.max(1),
                kv_bytes: args.kv_memory_mib.max(1) << 20,
            };
            let attribution_store = args.models.store();
            let jobs = factory.clone();
            let local_adapters = args.adapters.clone();
            let operator = key.address();
            let adapters_dir = args.datadir.join("openlora").join("adapters");
            // Installing the model can mean a download; the chain does not wait for it.
            tokio::task::spawn_blocking(move || {
                let loaded = crate::model::resolve(&store, &name).and_then(|path| {
                    let model = openledger_llm::Model::load(&path)?;
                    anyhow::Ok((path, model))
                });
                match loaded {
                    Ok((path, model)) => {
                        let config = model.llama.config().clone();
                        println!(
                            "  model:       {name} ({} layers, {} wide, context {}) from {}",
                            config.num_layers,
                            config.hidden_size,
                            config.context_length,
                            path.display()
                        );
                        // Every finished training job's adapter is served by its name.
                        // The fine-tunes published on chain, fetched by hash from the blob
                        // store, as `model-{id}`.
                        let base_hash = match std::fs::read(&path) {
                            Ok(bytes) => B256::from(*blake3::hash(&bytes).as_bytes()),
                            Err(_) => B256::ZERO,
                        };
                        let published = Arc::new(crate::published::PublishedAdapters::new(
                            &rpc_url,
                            blobs,
                            adapters_dir,
                            base_hash,
                        ));
                        let listed = jobs.clone();
                        let adapters: openlora::registry::Source = Box::new(move || {
                            listed.list()
                                .into_iter()
                                .filter(|j| j.result.is_some())
                                .map(|j| (j.name.clone(), listed.adapter_dir(j.id)))
                                .collect()
                        });
                        let on_chain = published.clone();
                        let (attributed_jobs, attributed_models) = (jobs.clone(), published.clone());
                        let attributed_store = attribution_store.clone();
                        let mut sources = vec![
                            adapters,
                            Box::new(move || {
                                on_chain.list().into_iter().map(|p| (p.name, p.dir)).collect()
                            }),
                        ];
                        if let Some(dir) = local_adapters.clone() {
                            sources.push(Box::new(move || peft_dirs(&dir)));
                        }
                        // A served name is priced by its adapter's hash in the Models registry.
                        let priced_jobs = jobs.clone();
                        let priced_dir = local_adapters.clone();
                        let hashes: crate::billing::AdapterHashes = Box::new(move |name| {
                            let job = priced_jobs
                                .list()
                                .into_iter()
                                .find(|j| j.name == name)
                                .and_then(|j| j.result.map(|r| r.adapter_hash));
                            job.or_else(|| {
                                published
                                    .list()
                                    .into_iter()
                                    .find(|p| p.name == name)
                                    .map(|p| p.adapter_hash)
                            })
                            .or_else(|| {
                                let dir = priced_dir.as_ref()?.join(name);
                                crate::billing::peft_adapter_hash(&dir)
                            })
                        });
                        let attributor = Arc::new(crate::attribute::NodeAttributor::new(
                            attributed_jobs,
                            attributed_models,
                            attributed_store,
                            openledger_attribution::SpanParams::default(),
                        ));
                        let _ = attribution.set(attributor.clone());
                        let meter = crate::billing::ChainMeter::new(
                            &rpc_url,
                            operator,
                            api_keys,
                            usage,
                            hashes,
                        );
                        let _ = serving.set(openlora::Serving {
                            engine: openlora::Engine::start_with(
                                std::sync::Arc::new(model),
                                engine_config,
                            ),
                            base_name: name.clone(),
                            adapters: openlora::Registry::new(sources, 1 << 30),
                            meter: Some(Arc::new(meter)),
                            attributor: Some(attributor),
                        });
                        println!("  OpenAI API:  serving {name} and finished fine-tunes at /v1/chat/completions");
                    }
                    Err(e) => eprintln!("warning: base model {name} unavailable: {e:#}"),
                }
            });
        }
        println!("\nListening on {}. Press Ctrl-C to stop.", node.rpc_addr);
        tokio::signal::ctrl_c().await?;
        println!("Stopping…");
        api.abort();
        // A running training job checkpoints and stays queued for the next start.
        tokio::task::spawn_blocking(move || factory.shutdown()).await?;
        node.stop().await;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod param_tests {
    use super::*;

    #[test]
    fn genesis_params_are_checked_against_the_registry() {
        let (name, value) = parse_genesis_param("governance.voting_period_blocks=10").unwrap();
        assert_eq!(
            (name.as_str(), value),
            ("governance.voting_period_blocks", U256::from(10))
        );
        let zero = parse_genesis_param("governance.voting_period_blocks=0").unwrap_err();
        assert!(zero.contains("between 10 and"), "{zero}");
        let unknown = parse_genesis_param("no.such=1").unwrap_err();
        assert!(unknown.contains("known: block.gas_limit"), "{unknown}");
        assert!(parse_genesis_param("staking.slash_bps").is_err());
    }

    #[test]
    fn a_genesis_fee_split_must_stay_whole() {
        assert!(check_genesis_params(&[]).is_ok());
        let moved = |c: u64, t: u64| {
            vec![
                ("settlement.contributors_bps".to_string(), U256::from(c)),
                ("settlement.treasury_bps".to_string(), U256::from(t)),
            ]
        };
        assert!(check_genesis_params(&moved(7_400, 100)).is_ok());
        let err = check_genesis_params(&moved(7_400, 500)).unwrap_err();
        assert!(err.to_string().contains("sums to 10400 bps"), "{err}");
    }
}
