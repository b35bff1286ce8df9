//! Whole JSON-RPC requests through every method handler, in process: any input yields a
//! response or a parse error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openledger_chain::{ChainSpec, Genesis};
use openledger_node::chain::Chain;
use openledger_node::rpc::{RpcConfig, module};
use openledger_primitives::Address;
use std::sync::{Arc, OnceLock};

struct Env {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    module: jsonrpsee::RpcModule<openledger_node::rpc::RpcContext>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(dir.path(), ChainSpec::devnet(1612), &Genesis::default(), Address::ZERO).unwrap();
        let config = RpcConfig { wait_for_inclusion: None, ..RpcConfig::default() };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Env { _dir: dir, runtime, module: module(Arc::new(chain), config) }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = env();
    let _ = env.runtime.block_on(env.module.raw_json_request(text, 1));
});
