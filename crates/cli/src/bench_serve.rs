//! `openledger bench-serve`: OpenLoRA's multi-adapter serving measured in one run, against
//! the same engine serving the base model alone and, when given, llama.cpp's `llama-server`
//! on the same GGUF, the same prompts and the same adapter ranks and targets.
//!
//! 1. **Adapters × throughput.** `--streams` (32) concurrent greedy requests of `--max-tokens`
//!    (64) tokens, closed loop (a finished request is replaced at once), `--requests` (32) per
//!    configuration, spread round-robin over 1, 8, 64 and 512 distinct adapters (with more
//!    adapters than requests, each request has its own, evenly spaced over all of them, every
//!    one resident), beside the base model alone (run first and last, to show how much the
//!    shared machine drifted). The engine is driven in process;
//!    adapters come through an [`openlora::Registry`] over PEFT directories, preloaded, so this
//!    part measures decoding. Reported: aggregate generated tok/s (first submit to last `Done`),
//!    its ratio to base, and time to first token p50/p99.
//! 2. **Zipf popularity through a small cache.** Adapters drawn Zipf(`--zipf-s`) from
//!    `--zipf-adapters` (1,000) PEFT directories through a registry whose byte budget holds
//!    `--cache-adapters` (100) adapters' worth. First `--zipf-warm` draws are only fetched, on
//!    this thread, to bring the cache to its steady state (and to measure the RSS it takes);
//!    then `--zipf-requests` requests run, `--streams` in flight, each fetching its adapter on
//!    the blocking pool as the HTTP API does, so its time to first token includes any cold
//!    load. Reported: TTFT, hit rate, cold-load latency, RAM per resident adapter (the
//!    registry's accounting and the RSS growth).
//! 3. **llama-server** (`--llama-server PATH`): `bench/llama_server_bench.py` starts it once with
//!    the GGUF and every adapter of part 1 written by `make_lora_gguf.py` (same ranks, targets and
//!    relative scale, `--lora-init-without-apply`), selects each request's adapter with the
//!    request's `lora` field and runs part 1's workload; the ratio ours / llama-server is printed.
//!
//! Adapters: ranks alternate 8 and 16 (alpha = 2 × rank); three in four target q and v, one in
//! four all seven linear layers (the two recipes most PEFT users pick). Weights are random with
//! a realistic scale: the std of `s·B·A` is `--rel` (0.1) times the std of the base weight it
//! modifies (measured per layer from the GGUF), as `make_lora_gguf.py` does. PEFT files hold f16
//! (as fine-tunes are usually saved); the registry keeps f32.
//!
//! Weights: f32 by default. candle's quantized matmul computes each row against the weights on
//! its own, so with the file's Q4_1 weights (`--weights exact`, what `openledger up` loads
//! today) 32 streams decode little faster than one; f32 goes through a batched gemm.
//!
//! Running it (release, this CPU's features; the machine must be otherwise idle for figures
//! worth comparing, and even then compare only within one run):
//!
//! ```text
//! export CARGO_TARGET_DIR=$HOME/.cache/openledger/target
//! RUSTFLAGS="-C target-cpu=native" cargo build --release -p openledger-cli
//! bench/setup_llama_server.sh          # optional: prints its python, then the llama-server path
//! $CARGO_TARGET_DIR/release/openledger bench-serve \
//!     --llama-server $HOME/.cache/openledger/llama-server-src/build-0.3.36/bin/llama-server
//! ```
//!
//! The adapters are written to a temporary directory (≈ 3 GB for 1,000) and removed at the end,
//! unless `--adapter-dir` names a directory to keep and reuse.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use clap::Args;
use openledger_llm::config::LlamaConfig;
use openledger_llm::{DEFAULT_MODEL, LoraConfig, Model, SamplingParams, Target, Weights};
use openlora::{Engine, Event, Registry, Request};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::model::{StoreArgs, resolve};

#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// How linear layers compute: exact (the file's quantization, what `openledger up` serves),
    /// q8 or f32.
    #[arg(long, default_value = "exact", value_parser = crate::model::parse_weights)]
    pub weights: Weights,
    /// Concurrent requests (also the engine's batch size).
    #[arg(long, default_value_t = 32)]
    pub streams: usize,
    /// Tokens each request generates (greedy; fewer if it ends early).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Distinct adapter counts for part 1.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,512")]
    pub adapters: Vec<usize>,
    /// Requests per part-1 configuration (with more adapters than requests, each request has
    /// its own adapter, spread evenly over all of them, every one resident).
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Adapters registered for part 2 (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub zipf_adapters: usize,
    /// Requests in part 2's measured run.
    #[arg(long, default_value_t = 128)]
    pub zipf_requests: usize,
    /// Zipf draws whose adapters are fetched (no decoding) before part 2's measured run, so the
    /// cache is in its steady state rather than empty.
    #[arg(long, default_value_t = 1000)]
    pub zipf_warm: usize,
    /// Zipf exponent of adapter popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf_s: f64,
    /// Part 2's cache budget, in adapters' worth of bytes (the population's mean size).
    #[arg(long, default_value_t = 100)]
    pub cache_adapters: usize,
    /// Std of each adapter's `s·B·A` relative to the std of the base weight it modifies.
    #[arg(long, default_value_t = 0.1)]
    pub rel: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep the PEFT adapters here (and reuse them next time) instead of a temporary directory.
    #[arg(long)]
    pub adapter_dir: Option<PathBuf>,
    /// A llama-server binary (bench/setup_llama_server.sh builds one) for the side-by-side run.
    #[arg(long)]
    pub llama_server: Option<PathBuf>,
    /// llama-server's --threads (default: this machine's cores, as the engine uses).
    #[arg(long)]
    pub llama_threads: Option<usize>,
    /// Python with numpy and gguf, for make_lora_gguf.py and the llama-server driver (default:
    /// the venv bench/setup_llama_server.sh makes, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The anchors' GGUF adapter writer.
    #[arg(long)]
    pub make_lora_gguf: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The rank and targets of adapter `k` of every population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AdapterKind {
    rank: usize,
    all_linear: bool,
}

const QV: [Target; 2] = [Target::Q, Target::V];

impl AdapterKind {
    /// Ranks alternate 8, 16; adapters 6 and 7 of every 8 (one in four, both ranks) target all
    /// seven linear layers, the others q and v.
    fn of(k: usize) -> Self {
        Self {
            rank: if k.is_multiple_of(2) { 8 } else { 16 },
            all_linear: k % 8 >= 6,
        }
    }

    fn targets(self) -> &'static [Target] {
        if self.all_linear { &Target::ALL } else { &QV }
    }

    fn alpha(self) -> f64 {
        2.0 * self.rank as f64
    }

    fn label(self) -> String {
        format!(
            "r{}-{}",
            self.rank,
            if self.all_linear { "all" } else { "qv" }
        )
    }

    /// The targets in llama.cpp's tensor names.
    fn gguf_targets(self) -> String {
        self.targets()
            .iter()
            .map(|&t| gguf_name(t))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Bytes the registry accounts for it (f32 A and B on every layer).
    fn bytes(self, c: &LlamaConfig) -> usize {
        let per_layer: usize = self
            .targets()
            .iter()
            .map(|t| {
                let (input, output) = t.shape(c);
                self.rank * (input + output)
            })
            .sum();
        per_layer * c.num_layers * 4
    }
}

fn gguf_name(t: Target) -> &'static str {
    match t {
        Target::Q => "attn_q",
        Target::K => "attn_k",
        Target::V => "attn_v",
        Target::O => "attn_output",
        Target::Gate => "ffn_gate",
        Target::Up => "ffn_up",
        Target::Down => "ffn_down",
    }
}

fn adapter_name(k: usize) -> String {
    format!("a{k:04}")
}

/// Draws popularity ranks `0..n` with P(rank k) ∝ 1 / (k + 1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// The rank that the uniform draw `u` in [0, 1) falls on.
    fn rank(&self, u: f64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let i = self.cumulative.partition_point(|&c| c <= u * total);
        i.min(self.cumulative.len().saturating_sub(1))
    }
}

/// One request of a workload: which prompt, which adapter (`None`: the base model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    prompt: usize,
    adapter: Option<usize>,
}

/// `requests` requests cycling through `prompts` prompts and `adapters` adapters (0: base);
/// with more adapters than requests, each request takes its own adapter, evenly spread over
/// all of them.
fn round_robin(requests: usize, prompts: usize, adapters: usize) -> Vec<Job> {
    (0..requests)
        .map(|j| Job {
            prompt: j % prompts,
            adapter: (adapters > 0).then(|| {
                if adapters > requests {
                    j * adapters / requests
                } else {
                    j % adapters
                }
            }),
        })
        .collect()
}

/// `requests` requests whose adapter is drawn Zipf(`s`) over `adapters`; which adapter holds
/// which popularity rank is a seeded permutation, so popularity is independent of kind.
fn zipf_jobs(requests: usize, prompts: usize, adapters: usize, s: f64, seed: u64) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_rank: Vec<usize> = (0..adapters).collect();
    by_rank.shuffle(&mut rng);
    let zipf = Zipf::new(adapters, s);
    (0..requests)
        .map(|j| Job {
            prompt: j % prompts,
            adapter: Some(by_rank[zipf.rank(rng.r#gen::<f64>())]),
        })
        .collect()
}

/// Short completion prompts (continuations rarely end before 64 tokens).
const PROMPTS: [&str; 8] = [
    "The history of the printing press begins in",
    "Once upon a time, in a village by the sea, there lived",
    "The three most important ideas in economics are",
    "To make bread at home, you first need to",
    "The old lighthouse keeper looked out at the storm and",
    "In computer science, a hash table is",
    "The first time I visited Paris, I",
    "Photosynthesis is the process by which plants",
];

/// Per-(layer, target) std of the base weights, read from the GGUF.
fn weight_stds(path: &Path, c: &LlamaConfig) -> Result<Vec<[f64; 7]>> {
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut stds = vec![[0.0; 7]; c.num_layers];
    for (layer, row) in stds.iter_mut().enumerate() {
        for t in Target::ALL {
            let name = format!("blk.{layer}.{}.weight", gguf_name(t));
            let values: Vec<f32> = content
                .tensor(&mut file, &name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .and_then(|w| w.flatten_all())
                .and_then(|w| w.to_vec1())
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            row[t as usize] = var.sqrt();
        }
    }
    Ok(stds)
}

/// Uniform values with standard deviation `std`.
fn uniform(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    let half_width = (std * 3f64.sqrt()) as f32;
    (0..n)
        .map(|_| (rng.r#gen::<f32>() * 2.0 - 1.0) * half_width)
        .collect()
}

/// Writes adapter `k` as a PEFT directory (f16 safetensors).
fn write_adapter(
    dir: &Path,
    k: usize,
    c: &LlamaConfig,
    stds: &[[f64; 7]],
    rel: f64,
    seed: u64,
) -> Result<()> {
    let kind = AdapterKind::of(k);
    let config = LoraConfig::new(kind.rank, kind.alpha(), kind.targets());
    let scale = config.scale();
    let r = kind.rank;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
    let mut tensors = HashMap::new();
    for (layer, layer_stds) in stds.iter().enumerate() {
        for &t in kind.targets() {
            let (input, output) = t.shape(c);
            let std_a = 1.0 / (input as f64).sqrt();
            // std(s·B·A) = s · √r · std_a · std_b, wanted: rel · std(W).
            let std_b = rel * layer_stds[t as usize] / (scale * (r as f64).sqrt() * std_a);
            let a = Tensor::from_vec(
                uniform(&mut rng, r * input, std_a),
                (r, input),
                &Device::Cpu,
            )
            .and_then(|a| a.to_dtype(DType::F16))?;
            let b = Tensor::from_vec(
                uniform(&mut rng, output * r, std_b),
                (output, r),
                &Device::Cpu,
            )
            .and_then(|b| b.to_dtype(DType::F16))?;
            let parent = match t {
                Target::Q | Target::K | Target::V | Target::O => "self_attn",
                _ => "mlp",
            };
            let key = |which: &str| {
                format!(
                    "base_model.model.model.layers.{layer}.{parent}.{}.{which}.weight",
                    t.peft_name()
                )
            };
            tensors.insert(key("lora_A"), a);
            tensors.insert(key("lora_B"), b);
        }
    }
    std::fs::create_dir_all(dir)?;
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))?;
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(())
}

/// Makes sure adapters `0..n` exist under `root` (written with these settings).
fn ensure_population(
    root: &Path,
    n: usize,
    c: &LlamaConfig,
    stds: &[[f64; 7]],
    rel: f64,
    seed: u64,
    model: &Path,
) -> Result<()> {
    let marker = root.join("population.json");
    let settings = serde_json::json!({"rel": rel, "seed": seed, "model": model, "format": 1});
    std::fs::create_dir_all(root)?;
    match std::fs::read(&marker) {
        Ok(bytes) => {
            let found: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if found != settings {
                bail!(
                    "{} holds adapters written with other settings ({found}); remove it or pick another --adapter-dir",
                    root.display()
                );
            }
        }
        Err(_) => std::fs::write(&marker, settings.to_string())?,
    }
    let started = Instant::now();
    let mut written = 0;
    for k in 0..n {
        let dir = root.join(adapter_name(k));
        if dir.join("adapter_config.json").is_file() {
            continue;
        }
        write_adapter(&dir, k, c, stds, rel, seed)?;
        written += 1;
        if written % 100 == 0 {
            eprintln!("  wrote {written} adapters");
        }
    }
    if written > 0 {
        eprintln!(
            "wrote {written} PEFT adapters to {} in {:.1}s",
            root.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn source(root: &Path, n: usize) -> openlora::registry::Source {
    let root = root.to_path_buf();
    Box::new(move || {
        (0..n)
            .map(|k| (adapter_name(k), root.join(adapter_name(k))))
            .collect()
    })
}

/// What one request saw.
struct Outcome {
    ttft: Duration,
    tokens: usize,
    /// Time to read its adapter from disk, when the registry missed.
    load: Option<Duration>,
}

struct RunResult {
    wall: Duration,
    outcomes: Vec<Outcome>,
}

impl RunResult {
    fn tokens(&self) -> usize {
        self.outcomes.iter().map(|o| o.tokens).sum()
    }

    fn tok_s(&self) -> f64 {
        self.tokens() as f64 / self.wall.as_secs_f64()
    }

    fn ttft_ms(&self) -> Vec<f64> {
        self.outcomes
            .iter()
            .map(|o| o.ttft.as_secs_f64() * 1e3)
            .collect()
    }
}

/// The `p`-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything a request needs besides its job.
#[derive(Clone)]
struct Serving {
    engine: Engine,
    registry: Arc<Registry>,
    config: Arc<LlamaConfig>,
    prompts: Arc<Vec<Vec<u32>>>,
    max_tokens: usize,
}

async fn one(s: Serving, job: Job) -> Result<Outcome> {
    let started = Instant::now();
    let (adapter, load) = match job.adapter {
        None => (None, None),
        Some(k) => {
            let (registry, config) = (s.registry.clone(), s.config.clone());
            let fetched =
                tokio::task::spawn_blocking(move || registry.fetch(&adapter_name(k), &config))
                    .await??
                    .with_context(|| format!("no adapter {}", adapter_name(k)))?;
            (Some(fetched.adapter), fetched.loaded_in)
        }
    };
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    s.engine.submit(Request {
        tenant: None,
        prompt: s.prompts[job.prompt].clone(),
        params: SamplingParams {
            temperature: 0.0,
            max_tokens: s.max_tokens,
            ..SamplingParams::default()
        },
        adapter,
        events,
    })?;
    let mut ttft = None;
    while let Some(event) = received.recv().await {
        let at = started.elapsed();
        match event {
            Event::Text(_) => {
                ttft.get_or_insert(at);
            }
            Event::Done(completion) => {
                return Ok(Outcome {
                    ttft: ttft.unwrap_or(at),
                    tokens: completion.tokens.len(),
                    load,
                });
            }
            Event::Failed(e) => bail!("request failed: {e}"),
        }
    }
    bail!("the engine dropped a request")
}

/// Runs `jobs` with `streams` in flight (closed loop): wall time from the first submit to the
/// last completion.
fn drive(
    runtime: &tokio::runtime::Runtime,
    serving: &Serving,
    jobs: &[Job],
    streams: usize,
) -> Result<RunResult> {
    runtime.block_on(async {
        let mut running = tokio::task::JoinSet::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let started = Instant::now();
        for &job in jobs {
            while running.len() >= streams {
                if let Some(done) = running.join_next().await {
                    outcomes.push(done??);
                }
            }
            running.spawn(one(serving.clone(), job));
        }
        while let Some(done) = running.join_next().await {
            outcomes.push(done??);
        }
        Ok(RunResult {
            wall: started.elapsed(),
            outcomes,
        })
    })
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// llama-server's figures for one configuration.
#[derive(Debug, Clone, serde::Deserialize)]
struct TheirRun {
    adapters: usize,
    tok_s: f64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    tokens: usize,
    requests: usize,
}

/// Part 2's findings.
struct ZipfRun {
    result: RunResult,
    budget: usize,
    distinct: usize,
    /// Cold loads while warming the cache (sequential, no decoding beside them), ms.
    warm_loads: Vec<f64>,
    /// Resident adapters and their bytes after warming, and the RSS growth over warming.
    warm_resident: (usize, usize),
    warm_rss: Option<(usize, usize)>,
    /// Registry hits and misses during the measured run.
    hits: u64,
    misses: u64,
}

struct OurRun {
    label: String,
    adapters: usize,
    requests: usize,
    result: RunResult,
}

pub fn run(args: ServeBenchArgs) -> Result<()> {
    let streams = args.streams.max(1);
    let path = resolve(&args.store.store(), &args.model)?;
    if !path.is_file() {
        bail!(
            "bench-serve needs a GGUF model (llama-server reads only GGUF); {} is a directory",
            path.display()
        );
    }
    let model = Arc::new(Model::load_with(&path, args.weights)?);
    let config = Arc::new(model.llama.config().clone());
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| model.tokenizer.encode(p))
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load_average();

    let temporary;
    let root = match &args.adapter_dir {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("bench-serve-")
                .tempdir()
                .context("temporary adapter directory")?;
            temporary.path().to_path_buf()
        }
    };
    let most = args.adapters.iter().copied().max().unwrap_or(0);
    let population = most.max(args.zipf_adapters);
    let stds = weight_stds(&path, &config)?;
    ensure_population(
        &root, population, &config, &stds, args.rel, args.seed, &path,
    )?;

    let engine = Engine::start(model.clone(), streams);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let serving = |registry: Arc<Registry>| Serving {
        engine: engine.clone(),
        registry,
        config: config.clone(),
        prompts: Arc::new(prompts.clone()),
        max_tokens: args.max_tokens,
    };

    // Warm-up: threads, pages of the weights, allocator.
    let warm = Serving {
        max_tokens: 8,
        ..serving(Arc::new(Registry::new(Vec::new(), 0)))
    };
    drive(
        &runtime,
        &warm,
        &round_robin(streams, prompts.len(), 0),
        streams,
    )?;

    // Part 2 runs first, on a heap that has not yet held hundreds of adapters, so the RSS
    // growth it reports is the cache's.
    let mean_bytes = (0..args.zipf_adapters)
        .map(|k| AdapterKind::of(k).bytes(&config))
        .sum::<usize>()
        .checked_div(args.zipf_adapters);
    let zipf = if let Some(mean_bytes) = mean_bytes {
        let budget = mean_bytes * args.cache_adapters;
        let registry = Arc::new(Registry::new(
            vec![source(&root, args.zipf_adapters)],
            budget,
        ));
        let all = zipf_jobs(
            args.zipf_warm + args.zipf_requests,
            prompts.len(),
            args.zipf_adapters,
            args.zipf_s,
            args.seed,
        );
        let (warm_jobs, jobs) = all.split_at(args.zipf_warm.min(all.len()));
        let distinct = {
            let mut seen: Vec<usize> = jobs.iter().filter_map(|j| j.adapter).collect();
            seen.sort();
            seen.dedup();
            seen.len()
        };
        eprintln!(
            "part 2: Zipf({}) over {} adapters, cache {} MiB: warming with {} fetches",
            args.zipf_s,
            args.zipf_adapters,
            budget >> 20,
            warm_jobs.len()
        );
        // Warming runs on this thread alone, so RSS growth is the cache's (and its allocator's).
        let rss_before = rss_bytes();
        let mut warm_loads = Vec::new();
        for job in warm_jobs {
            let k = job.adapter.expect("Zipf jobs name an adapter");
            let fetched = registry
                .fetch(&adapter_name(k), &config)?
                .with_context(|| format!("no adapter {}", adapter_name(k)))?;
            warm_loads.extend(fetched.loaded_in.map(|d| d.as_secs_f64() * 1e3));
        }
        let warm_rss = rss_before.zip(rss_bytes());
        let warm_resident = registry.resident();
        let counts = |r: &Registry| {
            use std::sync::atomic::Ordering::Relaxed;
            (r.hits.load(Relaxed), r.misses.load(Relaxed))
        };
        let (hits_before, misses_before) = counts(&registry);
        eprintln!(
            "part 2: {} requests ({distinct} distinct adapters)",
            jobs.len()
        );
        let result = drive(&runtime, &serving(registry.clone()), jobs, streams)?;
        let (hits, misses) = counts(&registry);
        Some(ZipfRun {
            result,
            budget,
            distinct,
            warm_loads,
            warm_resident,
            warm_rss,
            hits: hits - hits_before,
            misses: misses - misses_before,
        })
    } else {
        None
    };

    // Part 1: every adapter resident (unbounded cache), loaded before timing.
    let registry = Arc::new(Registry::new(vec![source(&root, most)], usize::MAX));
    let started = Instant::now();
    for k in 0..most {
        registry.get(&adapter_name(k), &config)?;
    }
    eprintln!(
        "part 1: {most} adapters loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let part1 = serving(registry.clone());
    let mut configurations = vec![("base (first)".to_string(), 0)];
    configurations.extend(args.adapters.iter().map(|&n| (n.to_string(), n)));
    configurations.push(("base (last)".to_string(), 0));
    let mut ours = Vec::new();
    for (label, adapters) in configurations {
        let requests = args.requests.max(1);
        let jobs = round_robin(requests, prompts.len(), adapters);
        let result = drive(&runtime, &part1, &jobs, streams)?;
        eprintln!(
            "  {label}: {requests} requests, {:.1} tok/s",
            result.tok_s()
        );
        ours.push(OurRun {
            label,
            adapters,
            requests,
            result,
        });
    }
    drop(part1);
    drop(registry);

    let theirs = match &args.llama_server {
        Some(server) => match llama_server(&args, server, &path, &root, &prompts, threads, most) {
            Ok(runs) => Ok(runs),
            Err(e) => Err(format!("{e:#}")),
        },
        None => Err("skipped: pass --llama-server (bench/setup_llama_server.sh builds one)".into()),
    };

    // Report.
    println!(
        "## OpenLoRA serving, {} ({}), weights {:?}, {threads} threads, {streams} streams, {} max tokens, greedy\n",
        args.model,
        path.display(),
        args.weights,
        args.max_tokens
    );
    println!(
        "load average before: {load_before}, after: {} (the machine is shared; compare within a run)\n",
        load_average()
    );
    let base: Vec<f64> = ours
        .iter()
        .filter(|r| r.adapters == 0)
        .map(|r| r.result.tok_s())
        .collect();
    let base_mean = base.iter().sum::<f64>() / base.len() as f64;
    println!(
        "### 1. Aggregate decode, {streams} concurrent streams over N adapters (round-robin, all resident)\n"
    );
    println!(
        "| adapters | requests | tokens | tok/s | ratio to base | TTFT p50 / p99 (ms) | llama-server tok/s | its TTFT p50 / p99 (ms) | ours / llama-server |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut base_theirs_printed = false;
    for run in &ours {
        let ttft = run.result.ttft_ms();
        let them = theirs.as_ref().ok().and_then(|t| {
            t.iter().find(|t| t.adapters == run.adapters).filter(|_| {
                // llama-server's base runs once; show it beside the first base row.
                run.adapters != 0 || !std::mem::replace(&mut base_theirs_printed, true)
            })
        });
        let (their_tok_s, their_ttft, ratio) = match them {
            Some(t) => (
                format!("{:.1}", t.tok_s),
                format!("{:.0} / {:.0}", t.ttft_p50_ms, t.ttft_p99_ms),
                format!("{:.2}×", run.result.tok_s() / t.tok_s),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.2}× | {:.0} / {:.0} | {their_tok_s} | {their_ttft} | {ratio} |",
            run.label,
            run.requests,
            run.result.tokens(),
            run.result.tok_s(),
            run.result.tok_s() / base_mean,
            percentile(&ttft, 50.0),
            percentile(&ttft, 99.0),
        );
    }
    println!(
        "\nratio to base: against the mean of the two base runs ({base_mean:.1} tok/s). Adapters: \
         ranks 8/16 alternating, 3 in 4 on q,v and 1 in 4 on all linear layers, std(s·B·A) = \
         {} × std(W).",
        args.rel
    );
    match &theirs {
        Ok(runs) => {
            if let Some(t) = runs.first() {
                println!(
                    "llama-server: same GGUF and prompt tokens, --threads {} --parallel {streams} --cont-batching, \
                     adapters by the request's `lora` field; {} requests, {} tokens in its first run.",
                    args.llama_threads.unwrap_or(threads),
                    t.requests,
                    t.tokens
                );
            }
        }
        Err(why) => println!("llama-server: {why}"),
    }

    if let Some(ZipfRun {
        result,
        budget,
        distinct,
        warm_loads,
        warm_resident: (resident, resident_bytes),
        warm_rss,
        hits,
        misses,
    }) = zipf
    {
        let ttft = result.ttft_ms();
        let loads: Vec<f64> = result
            .outcomes
            .iter()
            .filter_map(|o| o.load)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        println!(
            "\n### 2. Zipf({}) popularity over {} adapters, {streams} in flight, cache of {} adapters' worth ({:.0} MiB), after {} warming fetches\n",
            args.zipf_s,
            args.zipf_adapters,
            args.cache_adapters,
            budget as f64 / 1048576.0,
            args.zipf_warm
        );
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| requests (distinct adapters drawn) | {} ({distinct}) |",
            result.outcomes.len()
        );
        println!(
            "| aggregate tok/s | {:.1} ({:.2}× base) |",
            result.tok_s(),
            result.tok_s() / base_mean
        );
        println!(
            "| TTFT p50 / p99 (ms, adapter fetch included) | {:.0} / {:.0} |",
            percentile(&ttft, 50.0),
            percentile(&ttft, 99.0)
        );
        println!(
            "| registry hits / misses (hit rate) | {hits} / {misses} ({:.1} %) |",
            100.0 * hits as f64 / (hits + misses).max(1) as f64
        );
        println!(
            "| cold load during the run (read PEFT dir, f16 → f32) p50 / p99 (ms) | {:.1} / {:.1} ({} loads) |",
            percentile(&loads, 50.0),
            percentile(&loads, 99.0),
            loads.len()
        );
        println!(
            "| cold load while warming, nothing else running in this process, p50 / p99 (ms) | {:.1} / {:.1} ({} loads) |",
            percentile(&warm_loads, 50.0),
            percentile(&warm_loads, 99.0),
            warm_loads.len()
        );
        println!(
            "| resident after warming | {resident} adapters, {:.1} MiB |",
            resident_bytes as f64 / 1048576.0
        );
        println!(
            "| RAM per resident adapter, registry accounting | {:.2} MiB |",
            resident_bytes as f64 / resident.max(1) as f64 / 1048576.0
        );
        match warm_rss {
            Some((before, after)) => println!(
                "| RAM per resident adapter, RSS growth while warming / resident | {:.2} MiB ({:.1} → {:.1} MiB) |",
                (after as f64 - before as f64) / resident.max(1) as f64 / 1048576.0,
                before as f64 / 1048576.0,
                after as f64 / 1048576.0
            ),
            None => println!("| RSS | unavailable (no /proc/self/status) |"),
        }
        let sizes: Vec<String> = [0, 1, 6, 7]
            .into_iter()
            .map(|k| {
                let kind = AdapterKind::of(k);
                format!(
                    "{} {:.1} MiB",
                    kind.label(),
                    kind.bytes(&config) as f64 / 1048576.0
                )
            })
            .collect();
        println!("\nadapter sizes in RAM (f32): {}.", sizes.join(", "));
    }
    Ok(())
}

/// Part 1's workload on llama-server: GGUF adapters of the same kinds, then the driver.
fn llama_server(
    args: &ServeBenchArgs,
    server: &Path,
    model: &Path,
    root: &Path,
    prompts: &[Vec<u32>],
    threads: usize,
    most: usize,
) -> Result<Vec<TheirRun>> {
    let python = args.python.clone().unwrap_or_else(|| {
        let venv = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/openledger/venv-llama-server/bin/python");
        if venv.is_file() {
            venv
        } else {
            PathBuf::from("python3")
        }
    });
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let writer = args
        .make_lora_gguf
        .clone()
        .unwrap_or_else(|| bench.join("../../shared/anchors/make_lora_gguf.py"));
    let gguf_dir = root.join(format!("gguf-{most}"));
    // Adapter k is the j-th of its kind: write each kind's count with its own seed.
    let mut counts: Vec<(AdapterKind, usize)> = Vec::new();
    let mut files = Vec::with_capacity(most);
    for k in 0..most {
        let kind = AdapterKind::of(k);
        let j = match counts.iter_mut().find(|(c, _)| *c == kind) {
            Some((_, n)) => {
                *n += 1;
                *n - 1
            }
            None => {
                counts.push((kind, 1));
                0
            }
        };
        files.push(gguf_dir.join(format!("{}-{j:02}.gguf", kind.label())));
    }
    if !files.iter().all(|f| f.is_file()) {
        eprintln!("writing {most} GGUF adapters with {}", writer.display());
        for (i, (kind, n)) in counts.iter().enumerate() {
            let output = Command::new(&python)
                .arg(&writer)
                .arg("--base")
                .arg(model)
                .arg("--out-dir")
                .arg(&gguf_dir)
                .args(["--n", &n.to_string()])
                .args(["--rank", &kind.rank.to_string()])
                .args(["--alpha", &kind.alpha().to_string()])
                .args(["--targets", &kind.gguf_targets()])
                .args(["--rel", &args.rel.to_string()])
                .args(["--seed", &(1000 + 100_000 * i as u64).to_string()])
                .args(["--prefix", &kind.label()])
                .output()
                .with_context(|| format!("cannot run {}", python.display()))?;
            if !output.status.success() {
                bail!(
                    "make_lora_gguf.py failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    let mut configs = vec![0];
    configs.extend(args.adapters.iter().copied());
    let request = serde_json::json!({
        "server": server,
        "model": model,
        "loras": files,
        "configs": configs,
        "requests": args.requests,
        "streams": args.streams.max(1),
        "max_tokens": args.max_tokens,
        "prompts": prompts,
        "threads": args.llama_threads.unwrap_or(threads),
        "log": root.join("llama-server.log"),
    });
    let request_path = root.join("llama-server-request.json");
    std::fs::write(&request_path, request.to_string())?;
    eprintln!("running llama-server ({} adapters)", most);
    let output = Command::new(&python)
        .arg(bench.join("llama_server_bench.py"))
        .arg(&request_path)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "llama_server_bench.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let runs: Vec<TheirRun> = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .context("llama_server_bench.py printed no JSON summary")?;
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_in_proportion() {
        let zipf = Zipf::new(1000, 1.1);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = vec![0usize; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.rank(rng.r#gen::<f64>())] += 1;
        }
        let harmonic: f64 = (1..=1000).map(|k| (k as f64).powf(-1.1)).sum();
        for rank in [0, 1, 9] {
            let expected = ((rank + 1) as f64).powf(-1.1) / harmonic;
            let seen = counts[rank] as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < 0.1 * expected,
                "rank {rank}: {seen} vs {expected}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[999]);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_999), 999);
    }

    #[test]
    fn workloads_are_seeded_and_cover_their_adapters() {
        let jobs = round_robin(10, 8, 4);
        assert_eq!(
            jobs[5],
            Job {
                prompt: 5,
                adapter: Some(1)
            }
        );
        assert_eq!(jobs[9].prompt, 1);
        let spread: Vec<usize> = round_robin(32, 8, 512)
            .iter()
            .filter_map(|j| j.adapter)
            .collect();
        assert_eq!(spread[..3], [0, 16, 32]);
        assert_eq!(spread[31], 496);
        assert!(round_robin(3, 8, 0).iter().all(|j| j.adapter.is_none()));

        let a = zipf_jobs(500, 8, 1000, 1.1, 7);
        assert_eq!(a, zipf_jobs(500, 8, 1000, 1.1, 7));
        assert_ne!(a, zipf_jobs(500, 8, 1000, 1.1, 8));
        assert!(a.iter().all(|j| j.adapter.is_some_and(|k| k < 1000)));
        // The most popular adapter is not simply adapter 0 (ranks are permuted).
        let mut counts = HashMap::new();
        for j in &a {
            *counts.entry(j.adapter).or_insert(0) += 1;
        }
        let top = counts.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k);
        assert!(top.is_some() && counts[&top.unwrap()] > 500 / 20);
    }

    #[test]
    fn adapter_kinds_mix_ranks_and_targets() {
        let kinds: Vec<AdapterKind> = (0..8).map(AdapterKind::of).collect();
        assert_eq!(kinds.iter().filter(|k| k.rank == 8).count(), 4);
        assert_eq!(kinds.iter().filter(|k| k.all_linear).count(), 2);
        assert_ne!(kinds[6].rank, kinds[7].rank);
        assert_eq!(kinds[0].gguf_targets(), "attn_q,attn_v");
        assert_eq!(AdapterKind::of(7).label(), "r16-all");
    }
}
