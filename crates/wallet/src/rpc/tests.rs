use super::mock::{MockNode, Reply};
use super::*;
use alloy_primitives::{address, b256};
use std::net::TcpListener;

fn node_answering(result: Value) -> MockNode {
    MockNode::start(move |_, _| Reply::Result(result.clone()))
}

#[test]
fn typed_helpers_decode_quantities() {
    let node = MockNode::start(|method, _| {
        Reply::Result(match method {
            "eth_chainId" => json!("0x64c"),
            "eth_getBalance" => json!("0xde0b6b3a7640000"),
            "eth_getTransactionCount" => json!("0x7"),
            "eth_gasPrice" => json!("0x3b9aca00"),
            "eth_maxPriorityFeePerGas" => json!("0x1"),
            "eth_getBlockByNumber" => json!({ "number": "0x10", "baseFeePerGas": "0x7" }),
            _ => Value::Null,
        })
    });
    let client = RpcClient::new(&node.url);
    let who = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    assert_eq!(client.chain_id().unwrap(), 1612);
    assert_eq!(client.balance(who).unwrap(), U256::from(10u64.pow(18)));
    assert_eq!(client.nonce(who).unwrap(), 7);
    assert_eq!(client.gas_price().unwrap(), 1_000_000_000);
    assert_eq!(client.max_priority_fee().unwrap(), 1);
    assert_eq!(client.latest_base_fee().unwrap(), 7);
}

#[test]
fn requests_are_json_rpc_2_with_the_documented_params() {
    let node = node_answering(json!("0x0"));
    let client = RpcClient::new(&node.url);
    let who = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    client.nonce(who).unwrap();
    client.balance(who).unwrap();
    let requests = node.requests();
    assert_eq!(requests[0]["jsonrpc"], "2.0");
    assert_eq!(requests[0]["method"], "eth_getTransactionCount");
    assert_eq!(requests[0]["params"], json!([who, "pending"]));
    assert_eq!(requests[1]["params"], json!([who, "latest"]));
    assert_ne!(requests[0]["id"], requests[1]["id"]);
}

#[test]
fn send_raw_hex_encodes_the_bytes_and_returns_the_hash() {
    let hash = b256!("0x00000000000000000000000000000000000000000000000000000000000000aa");
    let node = node_answering(json!(hash));
    let client = RpcClient::new(&node.url);
    assert_eq!(client.send_raw(&[0x02, 0xab]).unwrap(), hash);
    assert_eq!(node.requests()[0]["params"], json!(["0x02ab"]));
}

#[test]
fn json_rpc_errors_keep_code_message_and_data() {
    let node = MockNode::start(|_, _| Reply::Error {
        code: -32000,
        message: "nonce too low",
        data: Some(json!("0x01")),
    });
    let err = RpcClient::new(&node.url).chain_id().unwrap_err();
    assert_eq!(err.json_rpc_code(), Some(-32000));
    let RpcError::JsonRpc {
        method,
        message,
        data,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (method.as_str(), message.as_str()),
        ("eth_chainId", "nonce too low")
    );
    assert_eq!(data.as_deref(), Some(&json!("0x01")));
    assert!(
        err.to_string()
            .contains("rejected eth_chainId: nonce too low"),
        "{err}"
    );
}

#[test]
fn json_rpc_error_with_http_error_status_is_still_a_json_rpc_error() {
    let node = MockNode::start(|_, _| Reply::Raw {
        status: 400,
        body:
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request"}})
                .to_string(),
    });
    let err = RpcClient::new(&node.url).chain_id().unwrap_err();
    assert_eq!(err.json_rpc_code(), Some(-32600), "{err:?}");
}

#[test]
fn non_json_and_malformed_replies_are_bad_responses() {
    let cases: Vec<(u16, String, &str)> = vec![
        (404, "not found".into(), "not JSON"),
        (200, "[]".into(), "not an object"),
        (
            200,
            json!({"jsonrpc":"2.0","id":1}).to_string(),
            "neither result nor error",
        ),
        (
            200,
            json!({"jsonrpc":"2.0","id":999,"result":"0x1"}).to_string(),
            "does not match",
        ),
        (
            200,
            json!({"jsonrpc":"2.0","id":1,"error":{"oops":1}}).to_string(),
            "malformed error",
        ),
    ];
    for (status, body, expected) in cases {
        let node = MockNode::start(move |_, _| Reply::Raw {
            status,
            body: body.clone(),
        });
        let err = RpcClient::new(&node.url).chain_id().unwrap_err();
        assert!(matches!(err, RpcError::BadResponse { .. }), "{err:?}");
        assert!(
            err.to_string().contains(expected),
            "expected {expected:?} in {err}"
        );
    }
}

#[test]
fn wrong_result_type_is_a_bad_response() {
    let node = node_answering(json!({ "not": "a quantity" }));
    let err = RpcClient::new(&node.url).chain_id().unwrap_err();
    assert!(matches!(err, RpcError::BadResponse { .. }), "{err:?}");
    let err = RpcClient::new(&node.url)
        .call::<Vec<u8>>("x", json!([]))
        .unwrap_err();
    assert!(err.to_string().contains("cannot decode result"), "{err}");
}

#[test]
fn block_without_base_fee_is_a_bad_response() {
    let node = node_answering(json!({ "number": "0x1" }));
    let err = RpcClient::new(&node.url).latest_base_fee().unwrap_err();
    assert!(err.to_string().contains("no baseFeePerGas"), "{err}");
}

#[test]
fn unreachable_node_suggests_starting_it() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = RpcClient::new(&url).chain_id().unwrap_err();
    assert!(matches!(err, RpcError::Transport { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&url) && message.contains("is `openledger up` running?"),
        "{message}"
    );
}

#[test]
fn non_http_urls_are_rejected_before_sending() {
    for (url, expected) in [("https://node", "no TLS"), ("127.0.0.1:8545", "http://")] {
        let err = RpcClient::new(url).chain_id().unwrap_err();
        assert!(matches!(err, RpcError::InvalidUrl { .. }), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn receipt_is_none_until_mined_and_wait_receipt_polls() {
    let polls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&polls);
    let node = MockNode::start(move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Result(Value::Null)
        } else {
            Reply::Result(json!({ "status": "0x1" }))
        }
    });
    let client = RpcClient::new(&node.url);
    assert_eq!(client.receipt(B256::ZERO).unwrap(), None);
    let receipt = client
        .wait_receipt(B256::ZERO, Duration::from_secs(5))
        .unwrap();
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

#[test]
fn wait_receipt_times_out_with_the_hash_in_the_message() {
    let node = node_answering(Value::Null);
    let hash = b256!("0x1111111111111111111111111111111111111111111111111111111111111111");
    let err = RpcClient::new(&node.url)
        .wait_receipt(hash, Duration::from_millis(100))
        .unwrap_err();
    let RpcError::ReceiptTimeout { waited, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*waited >= Duration::from_millis(100));
    assert!(err.to_string().contains(&hash.to_string()), "{err}");
}

#[test]
fn one_client_is_shared_by_many_threads() {
    fn assert_shareable<T: Clone + Send + Sync>() {}
    assert_shareable::<RpcClient>();

    let node = node_answering(json!("0x64c"));
    let client = RpcClient::new(&node.url);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            let client = client.clone();
            scope.spawn(move || {
                for _ in 0..10 {
                    assert_eq!(client.chain_id().unwrap(), 1612);
                }
            });
        }
    });
    assert_eq!(node.requests().len(), 160);
}
