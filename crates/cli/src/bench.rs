//! `openledger bench`: transaction throughput of this node against anvil, in one run.
//!
//! Both nodes run as child processes on loopback with the same chain id, accounts and
//! hardfork. The same pre-signed EIP-1559 transfers are sent through `eth_sendRawTransaction`
//! with a fixed number of requests in flight; the clock stops when the last receipt is
//! available. Our node persists and fsyncs every block; anvil keeps state in memory. The ratio
//! is printed, never asserted: these machines are noisy.

use crate::devnet::{DEV_MNEMONIC, dev_accounts};
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use clap::Args;
use openledger_chain::{ChainSpec, Genesis};
use openledger_node::chain::Chain;
use openledger_primitives::{Address, U256, units::ONE_OPEN};
use openledger_wallet::{RpcClient, Transfer, build_transfer};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHAIN_ID: u64 = 1612;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Transfers per run; each count is one fresh run on both nodes.
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    pub txs: Vec<usize>,
    /// Requests in flight (one sending account each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// anvil binary (default: $ANVIL_BIN, then the one tests/js installs).
    #[arg(long)]
    pub anvil: Option<PathBuf>,
    /// Skip anvil and measure only this node.
    #[arg(long)]
    pub no_anvil: bool,
    /// Read calls per method in the read benchmark (eth_getBalance, eth_call); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    pub reads: usize,
}

struct Run {
    txs: usize,
    seconds: f64,
    peak_rss_kib: Option<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.txs as f64 / self.seconds
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let accounts = dev_accounts(DEV_MNEMONIC, args.concurrency.max(1) as u32)?;
    let anvil = if args.no_anvil {
        None
    } else {
        Some(find_anvil(args.anvil.clone())?)
    };
    println!(
        "bench: {} requests in flight, EIP-1559 transfers, chain id {CHAIN_ID}",
        args.concurrency
    );
    let mut rows = Vec::new();
    for &n in &args.txs {
        let batches = presign(&accounts, n)?;
        let ours = {
            let mut node = OurNode::start(accounts.len())?;
            let seconds = drive(&node.url, &batches)?;
            Run {
                txs: n,
                seconds,
                peak_rss_kib: node.peak_rss(),
            }
        };
        println!(
            "  {:>6} transfers  openledger  {:>9.0} tx/s",
            n,
            ours.rate()
        );
        let theirs = match &anvil {
            Some(bin) => {
                let mut node = Anvil::start(bin, accounts.len())?;
                match drive(&node.url, &batches) {
                    Ok(seconds) => {
                        let run = Run {
                            txs: n,
                            seconds,
                            peak_rss_kib: node.peak_rss(),
                        };
                        println!("  {n:>6} transfers  anvil       {:>9.0} tx/s", run.rate());
                        Some(run)
                    }
                    // anvil slows down as its chain grows; a run it cannot finish is a result.
                    Err(e) => {
                        println!("  {n:>6} transfers  anvil       did not finish: {e:#}");
                        None
                    }
                }
            }
            None => None,
        };
        rows.push((ours, theirs));
    }
    let reads = if args.reads > 0 {
        let ours = {
            let node = OurNode::start(accounts.len())?;
            read_throughput(&node.url, &accounts[0], args.reads, args.concurrency)?
        };
        let theirs = match &anvil {
            Some(bin) => {
                let node = Anvil::start(bin, accounts.len())?;
                Some(read_throughput(
                    &node.url,
                    &accounts[0],
                    args.reads,
                    args.concurrency,
                )?)
            }
            None => None,
        };
        Some((ours, theirs))
    } else {
        None
    };
    let exec = execution_throughput(&accounts, args.txs.iter().copied().max().unwrap_or(2000))?;

    println!("\nRPC throughput (transfers included per second, send → last receipt)");
    println!(
        "{:>8}  {:>14}  {:>14}  {:>7}  {:>16}  {:>16}",
        "txs", "openledger", "anvil", "ratio", "openledger RSS", "anvil RSS"
    );
    for (ours, theirs) in &rows {
        let (anvil_rate, ratio, anvil_rss) = match theirs {
            Some(t) => (
                format!("{:.0}/s", t.rate()),
                format!("{:.2}x", ours.rate() / t.rate()),
                fmt_rss(t.peak_rss_kib),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>8}  {:>14}  {:>14}  {:>7}  {:>16}  {:>16}",
            ours.txs,
            format!("{:.0}/s", ours.rate()),
            anvil_rate,
            ratio,
            fmt_rss(ours.peak_rss_kib),
            anvil_rss
        );
    }
    if let Some((ours, theirs)) = reads {
        println!(
            "\nRead calls ({} per method, {} in flight)",
            args.reads, args.concurrency
        );
        println!(
            "{:>16}  {:>14}  {:>14}  {:>7}",
            "method", "openledger", "anvil", "ratio"
        );
        for (i, method) in ["eth_getBalance", "eth_call"].iter().enumerate() {
            let mine = if i == 0 { ours.0 } else { ours.1 };
            let (other, ratio) = match theirs {
                Some(t) => {
                    let other = if i == 0 { t.0 } else { t.1 };
                    (format!("{other:.0}/s"), format!("{:.2}x", mine / other))
                }
                None => ("-".into(), "-".into()),
            };
            println!(
                "{method:>16}  {:>14}  {other:>14}  {ratio:>7}",
                format!("{mine:.0}/s")
            );
        }
    }
    println!("\nBlock execution without RPC ({} transfers)", exec.txs);
    println!(
        "  execute only (in memory):            {:>9.0} transfers/s",
        exec.execute_only
    );
    println!(
        "  pool admission (decode, recover, check): {:>5.0} transfers/s",
        exec.admission
    );
    println!(
        "  execute + commit (redb + JMT, fsync): {:>9.0} transfers/s in {} blocks",
        exec.execute_commit, exec.blocks
    );
    Ok(())
}

fn fmt_rss(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// One batch of signed transfers per sender, in nonce order.
fn presign(accounts: &[PrivateKeySigner], n: usize) -> Result<Vec<Vec<Vec<u8>>>> {
    let per = n.div_ceil(accounts.len());
    let mut batches = Vec::with_capacity(accounts.len());
    let mut left = n;
    for (i, account) in accounts.iter().enumerate() {
        let count = per.min(left);
        left -= count;
        let mut batch = Vec::with_capacity(count);
        for nonce in 0..count as u64 {
            let transfer = Transfer {
                to: Address::with_last_byte(0x10 + (i as u8 % 200)),
                value: U256::from(1u64 + nonce),
                nonce,
                chain_id: CHAIN_ID,
                max_fee_per_gas: 100_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
                gas_limit: 21_000,
            };
            batch.push(build_transfer(account, &transfer)?.raw.to_vec());
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// Sends every batch (one thread per sender) and waits for the last receipts.
fn drive(url: &str, batches: &[Vec<Vec<u8>>]) -> Result<f64> {
    let start = Instant::now();
    let handles: Vec<_> = batches
        .iter()
        .cloned()
        .map(|batch| {
            let client = RpcClient::with_timeout(url.to_string(), Duration::from_secs(60));
            std::thread::spawn(move || -> Result<()> {
                let mut last = None;
                for raw in &batch {
                    last = Some(client.send_raw(raw).context("eth_sendRawTransaction")?);
                }
                if let Some(hash) = last {
                    client
                        .wait_receipt(hash, Duration::from_secs(120))
                        .context("waiting for the last receipt")?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runtime `return(sload(0))` behind init code that deploys it: the cheapest contract read.
const READ_SLOT_CONTRACT: &str = "600b600c600039600b6000f360005460005260206000f3";

/// eth_getBalance and eth_call (to a freshly deployed contract) per second, `concurrency`
/// threads each sending their share back to back.
fn read_throughput(
    url: &str,
    deployer: &PrivateKeySigner,
    calls: usize,
    concurrency: usize,
) -> Result<(f64, f64)> {
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_eips::eip2718::Encodable2718;
    use alloy_signer::SignerSync;
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: 0,
        gas_limit: 200_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy_primitives::TxKind::Create,
        value: U256::ZERO,
        access_list: Default::default(),
        input: alloy_primitives::hex::decode(READ_SLOT_CONTRACT)?.into(),
    };
    let signature = deployer.sign_hash_sync(&tx.signature_hash())?;
    let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
    let client = RpcClient::with_timeout(url.to_string(), Duration::from_secs(60));
    let hash = client.send_raw(&raw)?;
    client.wait_receipt(hash, Duration::from_secs(60))?;
    let contract = deployer.address().create(0);
    let per_thread = calls.div_ceil(concurrency.max(1));
    let phase = |method: &'static str, params: serde_json::Value| -> Result<f64> {
        let start = Instant::now();
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                let client = client.clone();
                let params = params.clone();
                std::thread::spawn(move || -> Result<()> {
                    for _ in 0..per_thread {
                        client.call::<serde_json::Value>(method, params.clone())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        }
        Ok((per_thread * concurrency.max(1)) as f64 / start.elapsed().as_secs_f64())
    };
    let balance = phase(
        "eth_getBalance",
        serde_json::json!([deployer.address(), "latest"]),
    )?;
    let call = phase(
        "eth_call",
        serde_json::json!([{ "to": contract, "data": "0x" }, "latest"]),
    )?;
    Ok((balance, call))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(url: &str, child: &mut Child, what: &str) -> Result<()> {
    let client = RpcClient::with_timeout(url.to_string(), Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.chain_id().is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not answer on {url} within 60 s")
}

struct OurNode {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl OurNode {
    fn start(accounts: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .args([
                "up",
                "--port",
                &port.to_string(),
                "--chain-id",
                &CHAIN_ID.to_string(),
                "--api-port",
                "0",
                "--model",
                "none",
            ])
            .args(["--accounts", &accounts.to_string(), "--datadir"])
            .arg(dir.path())
            .env("OPENLEDGER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start `openledger up`")?;
        let mut node = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_ready(&node.url, &mut node.child, "openledger up")?;
        Ok(node)
    }

    fn peak_rss(&mut self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }
}

impl Drop for OurNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Anvil {
    child: Child,
    url: String,
}

impl Anvil {
    fn start(bin: &PathBuf, accounts: usize) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--chain-id",
                &CHAIN_ID.to_string(),
            ])
            .args([
                "--hardfork",
                "prague",
                "--mnemonic",
                DEV_MNEMONIC,
                "--accounts",
                &accounts.to_string(),
            ])
            .args([
                "--balance",
                "10000",
                "--block-base-fee-per-gas",
                "1000000000",
                "--gas-limit",
                "30000000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start anvil at {}", bin.display()))?;
        let mut node = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_ready(&node.url, &mut node.child, "anvil")?;
        Ok(node)
    }

    fn peak_rss(&mut self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_anvil(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let candidates = explicit
        .into_iter()
        .chain(std::env::var_os("ANVIL_BIN").map(PathBuf::from))
        .chain([PathBuf::from(
            "tests/js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil",
        )]);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!(
        "anvil not found: pass --anvil PATH, set ANVIL_BIN, or run `npm ci` in tests/js (or use --no-anvil)"
    )
}

struct ExecFigures {
    txs: usize,
    execute_only: f64,
    admission: f64,
    execute_commit: f64,
    blocks: u64,
}

/// Block execution throughput with no RPC in the way: pure execution on in-memory state, then
/// the full path (pool admission, execution, commit to redb with the state root).
fn execution_throughput(accounts: &[PrivateKeySigner], n: usize) -> Result<ExecFigures> {
    let spec = ChainSpec::devnet(CHAIN_ID);
    let genesis = Genesis {
        alloc: accounts
            .iter()
            .map(|a| (a.address(), ONE_OPEN * U256::from(10_000)))
            .collect(),
        ..Default::default()
    };
    let raws: Vec<Vec<u8>> = {
        let batches = presign(accounts, n)?;
        // Interleave senders so every block holds many accounts, as live traffic does.
        let longest = batches.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|i| batches.iter().filter_map(move |b| b.get(i).cloned()))
            .collect()
    };

    let txs: Vec<_> = raws
        .iter()
        .map(|r| openledger_chain::RecoveredTx::decode(r, CHAIN_ID, spec.max_tx_bytes))
        .collect::<Result<_, _>>()?;
    let mut state = openledger_chain::state::MemoryState::default();
    state.apply(&genesis.state());
    let ctx = openledger_chain::BlockContext {
        number: 1,
        timestamp: 1,
        beneficiary: Address::with_last_byte(1),
        base_fee: 1_000_000_000,
        gas_limit: u64::MAX / 2,
        prevrandao: Default::default(),
    };
    let start = Instant::now();
    let executed = openledger_chain::execute_block(&spec, &state, &ctx, txs)?;
    let execute_only = n as f64 / start.elapsed().as_secs_f64();
    if executed.txs.len() != n {
        bail!("only {} of {n} transfers executed", executed.txs.len());
    }

    let dir = tempfile::tempdir()?;
    let chain = Arc::new(Chain::open(
        dir.path(),
        spec,
        &genesis,
        Address::with_last_byte(1),
    )?);
    let start = Instant::now();
    for raw in &raws {
        chain
            .submit(raw)
            .map_err(|e| anyhow::anyhow!("pool refused a transfer: {e}"))?;
    }
    let admission = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut blocks = 0;
    while !chain.pool.is_empty() {
        chain.produce_block(1, false)?;
        blocks += 1;
    }
    let execute_commit = n as f64 / start.elapsed().as_secs_f64();
    Ok(ExecFigures {
        txs: n,
        execute_only,
        admission,
        execute_commit,
        blocks,
    })
}
