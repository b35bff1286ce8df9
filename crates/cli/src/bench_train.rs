//! `openledger bench-train`: LoRA fine-tuning throughput (tokens/s through forward, backward
//! and the optimizer step) on the base model, beside PyTorch + PEFT on the same weights when a
//! Python with them is given. The model goes to PyTorch as a Hugging Face directory written by
//! `openledger_llm::hf::export`, so both sides train the very same numbers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_llm::lora::Target;
use openledger_llm::train::{Example, Schedule, TrainConfig, Trainer};
use openledger_llm::{DEFAULT_MODEL, Model, Weights};

use crate::model::{StoreArgs, resolve};

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Tokens per sequence (one sequence per step).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// LoRA target layers: `all` (q, k, v, o, gate, up, down) or `attention` (q, k, v, o).
    #[arg(long, default_value = "all", value_parser = ["all", "attention"])]
    pub targets: String,
    /// Timed optimizer steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: u64,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// Python with torch, transformers and peft installed, for the side-by-side run.
    #[arg(long)]
    pub peft_python: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

const TEXT: &str = "Datanets are community-run collections of rows: people contribute, label and \
    validate them, and every row is credited to its contributor. Fine-tunes trained on a \
    snapshot record which rows they learned from, and inference fees flow back to the people \
    whose data shaped the answers. ";

pub fn run(args: TrainBenchArgs) -> Result<()> {
    if args.seq_len < 8 || args.steps == 0 || args.batch == 0 {
        bail!("--seq-len must be at least 8, and --steps and --batch at least 1");
    }
    let targets: Vec<String> = match args.targets.as_str() {
        "attention" => ["q_proj", "k_proj", "v_proj", "o_proj"]
            .map(String::from)
            .to_vec(),
        _ => Target::ALL
            .iter()
            .map(|t| t.peft_name().to_string())
            .collect(),
    };
    let path = resolve(&args.store.store(), &args.model)?;
    let model = Model::load_with(&path, Weights::Dequantized)?;
    let mut tokens = Vec::new();
    while tokens.len() < args.seq_len {
        tokens.extend(model.tokenizer.encode(TEXT)?);
    }
    tokens.truncate(args.seq_len);
    let example = Example {
        trained: vec![true; tokens.len()],
        tokens,
    };
    let config = TrainConfig {
        rank: args.rank,
        alpha: 2.0 * args.rank as f64,
        dropout: 0.0,
        learning_rate: 1e-4,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        max_steps: Some(args.steps + 1),
        targets: targets.clone(),
        micro_batch: args.batch,
        grad_accum: 1,
        seq_len: args.seq_len,
        eval_every: 0,
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    let examples = vec![example; args.batch];
    let mut trainer = Trainer::new(&model.llama, config, &examples, &[])?;
    let mut started = None;
    trainer.run(None, |_| {
        // The first step warms caches and allocators; time the rest.
        started.get_or_insert_with(Instant::now);
        true
    })?;
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let ours = (args.seq_len * args.batch) as f64 * args.steps as f64 / seconds;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "LoRA training, {} (LoRA on {}, rank {}), {} sequence(s) of {} tokens per step, {threads} threads",
        args.model,
        targets.join(","),
        args.rank,
        args.batch,
        args.seq_len
    );
    println!("| engine | tokens/s | peak RSS MiB |");
    println!("|---|---|---|");
    println!(
        "| openledger | {ours:.1} | {:.0} |",
        crate::bench_datanet::peak_rss_mib().unwrap_or(f64::NAN)
    );
    let Some(python) = &args.peft_python else {
        println!("\n(PyTorch + PEFT skipped: pass --peft-python, see bench/setup_peft.sh)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    openledger_llm::hf::export(&path, dir.path())?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/peft_train_bench.py"
    );
    let request = serde_json::json!({
        "model_dir": dir.path(),
        "seq_len": args.seq_len,
        "batch": args.batch,
        "targets": targets,
        "steps": args.steps,
        "rank": args.rank,
        "threads": threads,
        "text": TEXT,
    });
    let output = Command::new(python)
        .arg(script)
        .arg(request.to_string())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the PEFT benchmark failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the PEFT benchmark printed no JSON")?;
    let theirs = answer["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| PyTorch {} + PEFT {} | {theirs:.1} | {:.0} |",
        answer["torch"].as_str().unwrap_or("?"),
        answer["peft"].as_str().unwrap_or("?"),
        answer["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
    );
    println!("\nratio openledger / PEFT: {:.2}×", ours / theirs);
    Ok(())
}
