//! `kill -9` while transactions stream in, again and again: after each restart the node is at
//! a committed block whose receipts, nonces and state root agree, and it keeps making blocks.

use alloy_signer_local::PrivateKeySigner;
use openledger_node::StateProof;
use openledger_primitives::{Address, B256, U256};
use openledger_wallet::{RpcClient, Transfer, build_transfer};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHAIN_ID: u64 = 1612;
const SENDERS: usize = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The node process; killed when dropped, so a failing assertion leaves no node behind.
struct NodeProcess(Child);

impl NodeProcess {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(datadir: &std::path::Path, port: u16) -> (NodeProcess, RpcClient) {
    let child = Command::new(env!("CARGO_BIN_EXE_openledger"))
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
            "--datadir",
        ])
        .arg(datadir)
        .env("OPENLEDGER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client =
        RpcClient::with_timeout(format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.chain_id().is_err() {
        assert!(Instant::now() < deadline, "node did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (NodeProcess(child), client)
}

fn dev_keys() -> Vec<PrivateKeySigner> {
    [
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    ]
    .iter()
    .map(|k| k.parse().unwrap())
    .collect()
}

fn transfer(key: &PrivateKeySigner, nonce: u64) -> (B256, Vec<u8>) {
    let t = Transfer {
        to: Address::repeat_byte(0x55),
        value: U256::from(1),
        nonce,
        chain_id: CHAIN_ID,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        gas_limit: 21_000,
    };
    let signed = build_transfer(key, &t).unwrap();
    (signed.hash, signed.raw.to_vec())
}

#[test]
fn repeated_kill_9_under_load_leaves_a_consistent_chain_that_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let keys = dev_keys();
    // Every transaction handed to the node, by hash: a kill can land after the node committed
    // a transaction but before the client heard back, so the hash is recorded before sending.
    let sent: Arc<Mutex<std::collections::HashSet<(usize, B256)>>> = Arc::default();
    let mut last_head = 0u64;
    for round in 0..5u64 {
        let (mut child, client) = start(dir.path(), port);
        let head: u64 = u64::from_str_radix(
            client
                .call::<String>("eth_blockNumber", json!([]))
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        assert!(
            head >= last_head,
            "round {round}: head went back from {last_head} to {head}"
        );
        last_head = head;

        // Every accepted transaction of earlier rounds that has a receipt sits at or below the
        // head, and each sender's nonce counts exactly its mined transactions.
        let mut mined = [0u64; SENDERS];
        for (sender, hash) in sent.lock().unwrap().iter() {
            if let Some(r) = client.receipt(*hash).unwrap() {
                let block = u64::from_str_radix(
                    r["blockNumber"].as_str().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap();
                assert!(block <= head);
                mined[*sender] += 1;
            }
        }
        for (i, key) in keys.iter().enumerate() {
            let latest: String = client
                .call("eth_getTransactionCount", json!([key.address(), "latest"]))
                .unwrap();
            assert_eq!(
                u64::from_str_radix(latest.trim_start_matches("0x"), 16).unwrap(),
                mined[i],
                "round {round}: nonce of sender {i}"
            );
            // The committed state matches the header's state root.
            let proof: StateProof = client
                .call("openledger_getProof", json!([key.address(), [], "latest"]))
                .unwrap();
            let block: Value = client
                .call(
                    "eth_getBlockByNumber",
                    json!([format!("{:#x}", proof.block_number), false]),
                )
                .unwrap();
            proof
                .verify(block["stateRoot"].as_str().unwrap().parse().unwrap())
                .unwrap();
        }

        // Stream transfers from every sender, then kill mid-stream.
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = keys
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, key)| {
                let client = client.clone();
                let stop = stop.clone();
                let sent = sent.clone();
                let start_nonce = mined[i];
                std::thread::spawn(move || {
                    let mut nonce = start_nonce;
                    while !stop.load(Ordering::Relaxed) {
                        let (hash, raw) = transfer(&key, nonce);
                        sent.lock().unwrap().insert((i, hash));
                        if client.send_raw(&raw).is_err() {
                            break; // the node is gone
                        }
                        nonce += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        child.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
    // After all that, the node still makes blocks.
    let (mut child, client) = start(dir.path(), port);
    let nonce: String = client
        .call(
            "eth_getTransactionCount",
            json!([keys[0].address(), "pending"]),
        )
        .unwrap();
    let nonce = u64::from_str_radix(nonce.trim_start_matches("0x"), 16).unwrap();
    let hash = client.send_raw(&transfer(&keys[0], nonce).1).unwrap();
    let receipt = client.wait_receipt(hash, Duration::from_secs(30)).unwrap();
    assert_eq!(receipt["status"], "0x1");
    assert!(
        sent.lock().unwrap().len() > 20,
        "the load must actually have been applied"
    );
    child.kill();
}
