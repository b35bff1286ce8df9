//! `openledger bench-model`: prefill and single-stream decode speed of the base model, beside
//! llama.cpp (`llama-cpp-python`) on the same GGUF and thread count when a Python with it is
//! given. Also compares tokens: the prompt's token ids and the first greedy tokens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_llm::model::argmax;
use openledger_llm::{DEFAULT_MODEL, Model, Weights};

use crate::model::{StoreArgs, resolve};

#[derive(Args, Debug)]
pub struct ModelBenchArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Prompt tokens for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    pub prefill: usize,
    /// Tokens decoded one at a time.
    #[arg(long, default_value_t = 64)]
    pub decode: usize,
    /// Repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// How linear layers compute: exact (the file's quantization, llama.cpp's results), q8
    /// (slow 4/5-bit types re-quantized to Q8_0 for speed) or f32.
    #[arg(long, default_value = "exact", value_parser = crate::model::parse_weights)]
    pub weights: Weights,
    /// Python with llama-cpp-python installed, for the side-by-side run.
    #[arg(long)]
    pub llama_cpp_python: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

const TEXT: &str = "The history of the printing press begins in the fifteenth century, when movable \
    metal type made it possible to reproduce books quickly and cheaply. Within a few decades, \
    presses had spread to hundreds of towns, and the number of books in circulation grew from \
    thousands to millions. Scholars could compare identical copies, errors could be corrected in \
    later editions, and ideas travelled faster than ever before. ";

pub fn run(args: ModelBenchArgs) -> Result<()> {
    let path = resolve(&args.store.store(), &args.model)?;
    let model = Model::load_with(&path, args.weights)?;
    let mut prompt = Vec::new();
    while prompt.len() < args.prefill {
        prompt.extend(model.tokenizer.encode(TEXT)?);
    }
    prompt.truncate(args.prefill);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut best_prefill = f64::INFINITY;
    let mut best_decode = f64::INFINITY;
    let mut greedy = Vec::new();
    for _ in 0..args.runs.max(1) {
        let mut cache = model.llama.new_cache();
        let started = Instant::now();
        let mut logits = model.llama.forward(&prompt, &mut cache)?;
        best_prefill = best_prefill.min(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(args.decode);
        for _ in 0..args.decode {
            let next = argmax(&logits);
            tokens.push(next);
            logits = model.llama.forward(&[next], &mut cache)?;
        }
        best_decode = best_decode.min(started.elapsed().as_secs_f64());
        greedy = tokens;
    }
    let ours_prefill = args.prefill as f64 / best_prefill;
    let ours_decode = args.decode as f64 / best_decode;
    println!(
        "## Inference, {} ({}), weights {:?}, {threads} threads, best of {}\n",
        args.model,
        path.display(),
        args.weights,
        args.runs
    );
    println!(
        "| system | prefill tok/s ({} tokens) | decode tok/s ({} tokens) |",
        args.prefill, args.decode
    );
    println!("|---|---|---|");
    println!("| openledger | {ours_prefill:.1} | {ours_decode:.1} |");

    let Some(python) = &args.llama_cpp_python else {
        println!("\n(llama.cpp skipped: pass --llama-cpp-python, see bench/setup_llama_cpp.sh)");
        return Ok(());
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/llama_cpp_bench.py");
    let request = serde_json::json!({
        "model": path, "prompt": prompt, "decode": args.decode, "runs": args.runs, "threads": threads,
        "text": TEXT,
    });
    let output = Command::new(python)
        .arg(&script)
        .arg(request.to_string())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "llama.cpp run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .context("llama_cpp_bench.py printed no JSON summary")?;
    let theirs_prefill = result["prefill_tok_s"].as_f64().unwrap_or(f64::NAN);
    let theirs_decode = result["decode_tok_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| llama.cpp (llama-cpp-python {}) | {theirs_prefill:.1} | {theirs_decode:.1} |",
        result["version"].as_str().unwrap_or("?")
    );
    println!(
        "| ratio | {:.2}× | {:.2}× |",
        ours_prefill / theirs_prefill,
        ours_decode / theirs_decode
    );

    let their_tokens: Vec<u32> =
        serde_json::from_value(result["text_tokens"].clone()).unwrap_or_default();
    let our_tokens = model.tokenizer.encode(TEXT)?;
    println!(
        "\ntokenizer: {} (ours {} tokens, llama.cpp {})",
        if our_tokens == their_tokens {
            "identical ids"
        } else {
            "DIFFERENT ids"
        },
        our_tokens.len(),
        their_tokens.len()
    );
    let their_greedy: Vec<u32> =
        serde_json::from_value(result["greedy"].clone()).unwrap_or_default();
    let same = greedy
        .iter()
        .zip(&their_greedy)
        .take_while(|(a, b)| a == b)
        .count();
    println!(
        "greedy decode: first {same} of {} tokens identical{}",
        greedy.len().min(their_greedy.len()),
        if same < greedy.len().min(their_greedy.len()) {
            format!(
                " (diverges at token {same}: ours {} vs llama.cpp {})",
                greedy[same], their_greedy[same]
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
