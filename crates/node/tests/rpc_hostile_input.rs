//! Hostile and malformed input at the JSON-RPC edge: every request gets a precise JSON-RPC
//! error, the node keeps serving, and nothing is written.

use openledger_chain::test_utils::{CHAIN_ID, key, signed};
use openledger_chain::{ChainSpec, Genesis};
use openledger_node::consensus::Mining;
use openledger_node::rpc::RpcConfig;
use openledger_node::{Node, NodeConfig};
use openledger_primitives::{Address, Bytes, U256, units::ONE_OPEN};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(dir: &std::path::Path) -> Node {
    let config = NodeConfig {
        datadir: dir.to_path_buf(),
        spec: ChainSpec::devnet(CHAIN_ID),
        genesis: Genesis {
            alloc: vec![(key(0).address(), ONE_OPEN * U256::from(10))],
            ..Default::default()
        },
        mining: Mining::Instant,
        beneficiary: Address::repeat_byte(0xbe),
        rpc: RpcConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..RpcConfig::default()
        },
    };
    Node::start(config).await.unwrap()
}

/// One HTTP/1.1 POST; returns the status code and body.
async fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a huge body; a failed write is fine then.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn error_code(body: &str) -> Option<i64> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

async fn block_number(addr: SocketAddr) -> String {
    let (_, body) = post(
        addr,
        br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["result"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_huge_batch_requests_get_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let addr = node.rpc_addr;

    let (_, body) = post(addr, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":").await;
    assert_eq!(error_code(&body), Some(-32700), "{body}");

    let (_, body) = post(
        addr,
        br#"{"jsonrpc":"2.0","id":1,"method":"eth_noSuchThing","params":[]}"#,
    )
    .await;
    assert_eq!(error_code(&body), Some(-32601), "{body}");

    let (_, body) = post(
        addr,
        br#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x12"]}"#,
    )
    .await;
    assert_eq!(error_code(&body), Some(-32602), "{body}");

    let call = json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]});
    let batch = Value::Array(vec![call; 5_000]);
    let (_, body) = post(addr, batch.to_string().as_bytes()).await;
    assert_eq!(
        error_code(&body),
        Some(-32010),
        "a batch above the limit is refused whole: {body}"
    );

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x{}"]}}"#,
        "ab".repeat(6 << 20)
    );
    let (status, body) = post(addr, big.as_bytes()).await;
    assert!(
        status == 413 || error_code(&body).is_some(),
        "oversized body must be refused: {status} {body}"
    );

    // A transaction above the 128 KiB limit that still fits the body limit.
    let raw = signed(
        &key(0),
        0,
        alloy_primitives::TxKind::Call(Address::ZERO),
        U256::ZERO,
        Bytes::from(vec![1u8; 200_000]),
        25_000_000,
    );
    let req = json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[Bytes::from(raw)]});
    let (_, body) = post(addr, req.to_string().as_bytes()).await;
    assert!(body.contains("oversized data"), "{body}");

    assert_eq!(
        block_number(addr).await,
        "0x0",
        "no bad request may produce a block"
    );
    assert!(node.chain.pool.is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_transactions_leave_nonce_and_balance_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let addr = node.rpc_addr;
    let sender = key(0).address();
    let state = || async {
        let (_, b) = post(
            addr,
            json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[sender, "latest"]})
                .to_string()
                .as_bytes(),
        )
        .await;
        let (_, n) = post(addr, json!({"jsonrpc":"2.0","id":1,"method":"eth_getTransactionCount","params":[sender, "pending"]}).to_string().as_bytes()).await;
        (b, n)
    };
    let before = state().await;
    let to = alloy_primitives::TxKind::Call(Address::repeat_byte(3));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            signed(&key(0), 5, to, U256::ZERO, Bytes::new(), 21_000),
            "nonce too high",
        ),
        (
            signed(
                &key(0),
                0,
                to,
                ONE_OPEN * U256::from(11),
                Bytes::new(),
                21_000,
            ),
            "insufficient funds for gas * price + value",
        ),
        (
            signed(&key(0), 0, to, U256::ZERO, Bytes::new(), 31_000_000),
            "exceeds block gas limit",
        ),
        (
            signed(&key(0), 0, to, U256::ZERO, Bytes::new(), 20_000),
            "intrinsic gas too low",
        ),
        (
            signed(&key(1), 0, to, U256::ZERO, Bytes::new(), 21_000),
            "insufficient funds",
        ),
    ];
    for (raw, expected) in cases {
        let req = json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[Bytes::from(raw)]});
        let (_, body) = post(addr, req.to_string().as_bytes()).await;
        assert_eq!(error_code(&body), Some(-32000), "{body}");
        assert!(body.contains(expected), "expected {expected:?} in {body}");
    }
    assert_eq!(state().await, before);
    assert_eq!(block_number(addr).await, "0x0");
    node.stop().await;
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "eth_chainId",
        "eth_blockNumber",
        "eth_getBalance",
        "eth_getTransactionCount",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_call",
        "eth_estimateGas",
        "eth_feeHistory",
        "eth_sendRawTransaction",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getLogs",
        "openledger_getProof",
        "web3_sha3",
        "eth_gasPrice",
    ])
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9x]{0,70}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| json!(Bytes::from(b))),
        Just(json!("latest")),
        Just(json!("0x0")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary parameters to every method: a JSON-RPC response (result or error), never a
    /// panic, and the chain does not move.
    #[test]
    fn arbitrary_params_never_break_the_request_path(method in method(), params in prop::collection::vec(json_value(), 0..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (genesis_head, response, head_after, pool_len) = runtime.block_on(async {
            let config = NodeConfig {
                datadir: dir.path().to_path_buf(),
                spec: ChainSpec::devnet(CHAIN_ID),
                genesis: Genesis::default(),
                mining: Mining::Instant,
                beneficiary: Address::ZERO,
                rpc: RpcConfig::default(),
            };
            let chain = std::sync::Arc::new(openledger_node::chain::Chain::open(&config.datadir, config.spec.clone(), &config.genesis, Address::ZERO).unwrap());
            let head = chain.head().header.number;
            let module = openledger_node::rpc::module(chain.clone(), config.rpc);
            let request = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
            let (response, _) = module.raw_json_request(&request, 1).await.unwrap();
            (head, response.get().to_string(), chain.head().header.number, chain.pool.len())
        });
        let v: Value = serde_json::from_str(&response).unwrap();
        prop_assert_eq!(&v["id"], &json!(7));
        prop_assert!(v.get("result").is_some() != v.get("error").is_some(), "{}", response);
        prop_assert_eq!(genesis_head, head_after);
        prop_assert_eq!(pool_len, 0);
    }

    /// Random bytes as a raw transaction are refused with a JSON-RPC error.
    #[test]
    fn random_raw_transactions_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let response = runtime.block_on(async {
            let chain = std::sync::Arc::new(openledger_node::chain::Chain::open(dir.path(), ChainSpec::devnet(CHAIN_ID), &Genesis::default(), Address::ZERO).unwrap());
            let module = openledger_node::rpc::module(chain, RpcConfig { wait_for_inclusion: None, ..RpcConfig::default() });
            let request = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [Bytes::from(bytes)]}).to_string();
            module.raw_json_request(&request, 1).await.unwrap().0.get().to_string()
        });
        let v: Value = serde_json::from_str(&response).unwrap();
        let code = v["error"]["code"].as_i64();
        prop_assert!(code == Some(-32602) || code == Some(-32000), "{}", response);
    }
}
