//! `eth_*`, `net_*`, `web3_*` and `openledger_*` methods.

use super::RpcContext;
use super::error::{self, header_not_found, internal, invalid_params, server};
use super::filters::{FilterKind, MAX_FILTERS};
use super::types::{rpc_block, rpc_header, rpc_logs, rpc_receipt, rpc_tx};
use crate::chain::NewBlock;
use crate::store::{ReadView, SealedHeader};
use alloy_consensus::Transaction as _;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_rpc_types_eth::{FeeHistory, Filter, FilterBlockOption, TransactionRequest};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use openledger_chain::executor::{self, BlockContext, CallOutcome};
use openledger_chain::{StateView, TxError};
use openledger_primitives::{Address, B256, Bytes, U256, keccak256, units::GWEI};
use revm::context::TxEnv;
use revm::primitives::TxKind;
use serde_json::Value;
use std::sync::Arc;

type RpcResult<T> = Result<T, ErrorObjectOwned>;

/// Suggested priority fee: 1 gwei, as geth's dev mode.
const SUGGESTED_TIP: u128 = GWEI;

pub(super) fn register(
    m: &mut RpcModule<RpcContext>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    m.register_method("web3_clientVersion", |_, _, _| -> RpcResult<String> {
        Ok(format!("openledger/v{}", env!("CARGO_PKG_VERSION")))
    })?;
    m.register_method("web3_sha3", |p, _, _| -> RpcResult<B256> {
        let (data,): (Bytes,) = p.parse()?;
        Ok(keccak256(&data))
    })?;
    m.register_method("net_version", |_, c, _| -> RpcResult<String> {
        Ok(c.chain.spec.chain_id.to_string())
    })?;
    m.register_method("net_listening", |_, _, _| -> RpcResult<bool> { Ok(true) })?;
    m.register_method("net_peerCount", |_, _, _| -> RpcResult<String> {
        Ok("0x0".into())
    })?;
    m.register_method("eth_chainId", |_, c, _| -> RpcResult<String> {
        Ok(format!("{:#x}", c.chain.spec.chain_id))
    })?;
    m.register_method("eth_syncing", |_, _, _| -> RpcResult<bool> { Ok(false) })?;
    m.register_method("eth_mining", |_, _, _| -> RpcResult<bool> { Ok(true) })?;
    m.register_method("eth_accounts", |_, _, _| -> RpcResult<Vec<Address>> {
        Ok(Vec::new())
    })?;
    m.register_method("eth_coinbase", |_, c, _| -> RpcResult<Address> {
        Ok(c.chain.beneficiary)
    })?;
    m.register_method("eth_blockNumber", |_, c, _| -> RpcResult<String> {
        Ok(format!("{:#x}", c.chain.head().header.number))
    })?;
    m.register_method("eth_gasPrice", |_, c, _| -> RpcResult<String> {
        let next = c.chain.next_block().map_err(internal)?;
        Ok(format!("{:#x}", next.base_fee as u128 + SUGGESTED_TIP))
    })?;
    m.register_method("eth_maxPriorityFeePerGas", |_, _, _| -> RpcResult<String> {
        Ok(format!("{SUGGESTED_TIP:#x}"))
    })?;
    m.register_method("eth_blobBaseFee", |_, _, _| -> RpcResult<String> {
        Ok("0x1".into())
    })?;
    m.register_method("eth_getBalance", |p, c, _| -> RpcResult<U256> {
        let (address, state) = address_and_state(&p, c)?;
        Ok(state
            .account(address)
            .map_err(internal)?
            .map(|a| a.balance)
            .unwrap_or_default())
    })?;
    m.register_method("eth_getTransactionCount", |p, c, _| -> RpcResult<String> {
        let mut seq = p.sequence();
        let address: Address = seq.next()?;
        let block: Option<BlockId> = seq.optional_next()?;
        let (_, state) = state_for(c, block)?;
        let nonce = state
            .account(address)
            .map_err(internal)?
            .map(|a| a.nonce)
            .unwrap_or_default();
        let nonce = if is_pending(block) {
            c.chain.pool.pending_nonce(address, nonce)
        } else {
            nonce
        };
        Ok(format!("{nonce:#x}"))
    })?;
    m.register_method("eth_getCode", |p, c, _| -> RpcResult<Bytes> {
        let (address, state) = address_and_state(&p, c)?;
        match state.account(address).map_err(internal)? {
            Some(a) if a.has_code() => Ok(state
                .code(a.code_hash)
                .map_err(internal)?
                .unwrap_or_default()),
            _ => Ok(Bytes::new()),
        }
    })?;
    m.register_method("eth_getStorageAt", |p, c, _| -> RpcResult<B256> {
        let mut seq = p.sequence();
        let address: Address = seq.next()?;
        let slot: U256 = seq.next()?;
        let block: Option<BlockId> = seq.optional_next()?;
        let (_, state) = state_for(c, block)?;
        Ok(B256::from(state.storage(address, slot).map_err(internal)?))
    })?;
    m.register_method("eth_getBlockByNumber", |p, c, _| {
        let mut seq = p.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        get_block(c, BlockId::Number(tag), seq.optional_next()?)
    })?;
    m.register_method("eth_getBlockByHash", |p, c, _| {
        let mut seq = p.sequence();
        let hash: B256 = seq.next()?;
        get_block(c, BlockId::from(hash), seq.optional_next()?)
    })?;
    m.register_method(
        "eth_getBlockTransactionCountByNumber",
        |p, c, _| -> RpcResult<Option<String>> {
            let (tag,): (BlockNumberOrTag,) = p.parse()?;
            let view = read(c)?;
            let Some(header) = lookup(&view, BlockId::Number(tag))? else {
                return Ok(None);
            };
            Ok(Some(format!(
                "{:#x}",
                view.block_tx_hashes(header.header.number)
                    .map_err(internal)?
                    .len()
            )))
        },
    )?;
    m.register_method(
        "eth_getTransactionByHash",
        |p, c, _| -> RpcResult<Option<alloy_rpc_types_eth::Transaction>> {
            let (hash,): (B256,) = p.parse()?;
            let view = read(c)?;
            let Some(stored) = view.tx(hash).map_err(internal)? else {
                return Ok(c
                    .chain
                    .pool
                    .get(&hash)
                    .map(|tx| alloy_rpc_types_eth::Transaction {
                        inner: alloy_consensus::transaction::Recovered::new_unchecked(
                            tx.envelope,
                            tx.sender,
                        ),
                        block_hash: None,
                        block_number: None,
                        transaction_index: None,
                        effective_gas_price: None,
                        block_timestamp: None,
                    }));
            };
            let header = view
                .header(stored.block_number)
                .map_err(internal)?
                .ok_or_else(header_not_found)?;
            rpc_tx(&stored, &header).map(Some).map_err(internal)
        },
    )?;
    m.register_method(
        "eth_getTransactionReceipt",
        |p, c, _| -> RpcResult<Option<alloy_rpc_types_eth::TransactionReceipt>> {
            let (hash,): (B256,) = p.parse()?;
            let view = read(c)?;
            let (Some(stored), Some(receipt)) = (
                view.tx(hash).map_err(internal)?,
                view.receipt(hash).map_err(internal)?,
            ) else {
                return Ok(None);
            };
            let header = view
                .header(stored.block_number)
                .map_err(internal)?
                .ok_or_else(header_not_found)?;
            rpc_receipt(hash, &stored, &receipt, &header)
                .map(Some)
                .map_err(internal)
        },
    )?;
    m.register_method(
        "eth_getLogs",
        |p, c, _| -> RpcResult<Vec<alloy_rpc_types_eth::Log>> {
            let (filter,): (Filter,) = p.parse()?;
            get_logs(c, &filter)
        },
    )?;
    m.register_method("eth_feeHistory", |p, c, _| -> RpcResult<FeeHistory> {
        let mut seq = p.sequence();
        let count: Value = seq.next()?;
        let newest: BlockNumberOrTag = seq.next()?;
        let percentiles: Option<Vec<f64>> = seq.optional_next()?;
        fee_history(c, count, newest, percentiles.unwrap_or_default())
    })?;
    m.register_blocking_method("eth_call", |p, c, _| -> RpcResult<Bytes> {
        let mut seq = p.sequence();
        let request: TransactionRequest = seq.next()?;
        let block: Option<BlockId> = seq.optional_next()?;
        let outcome = run_call(&c, request, &state_for(&c, block)?, None)?;
        if outcome.success {
            Ok(outcome.output)
        } else if let Some(halt) = outcome.halt {
            Err(server(format!("execution halted: {halt}")))
        } else {
            Err(error::reverted(&outcome.output))
        }
    })?;
    m.register_blocking_method("eth_estimateGas", |p, c, _| -> RpcResult<String> {
        let mut seq = p.sequence();
        let request: TransactionRequest = seq.next()?;
        let block: Option<BlockId> = seq.optional_next()?;
        estimate_gas(&c, request, block).map(|g| format!("{g:#x}"))
    })?;
    m.register_async_method("eth_sendRawTransaction", |p, c, _| async move {
        let (raw,): (Bytes,) = p.parse()?;
        let chain = c.chain.clone();
        let mut committed = chain.pool.committed.subscribe();
        let hash = tokio::task::spawn_blocking(move || chain.submit(&raw))
            .await
            .map_err(internal)?
            .map_err(tx_error)?;
        if let Some(wait) = c.config.wait_for_inclusion {
            // Instant blocks: answer once the transaction is in a committed block.
            let _ = tokio::time::timeout(wait, async {
                while c.chain.pool.contains(&hash) {
                    if committed.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        RpcResult::Ok(hash)
    })?;
    m.register_method("eth_newFilter", |p, c, _| -> RpcResult<String> {
        let (filter,): (Filter,) = p.parse()?;
        let head = c.chain.head().header.number;
        // The first poll starts at fromBlock when one is given (as anvil and hardhat do),
        // else with the next block; later polls report only what is new.
        let from = filter
            .get_from_block()
            .map_or(head + 1, |f| f.min(head + 1));
        c.filters
            .install(FilterKind::Logs(Box::new(filter)), from)
            .ok_or_else(too_many_filters)
    })?;
    m.register_method("eth_newBlockFilter", |_, c, _| -> RpcResult<String> {
        let head = c.chain.head().header.number;
        c.filters
            .install(FilterKind::Blocks, head + 1)
            .ok_or_else(too_many_filters)
    })?;
    m.register_method(
        "eth_newPendingTransactionFilter",
        |_, c, _| -> RpcResult<String> {
            let head = c.chain.head().header.number;
            c.filters
                .install(FilterKind::PendingTransactions, head + 1)
                .ok_or_else(too_many_filters)
        },
    )?;
    m.register_method("eth_uninstallFilter", |p, c, _| -> RpcResult<bool> {
        let (id,): (String,) = p.parse()?;
        Ok(c.filters.uninstall(&id))
    })?;
    m.register_method("eth_getFilterChanges", |p, c, _| -> RpcResult<Value> {
        let (id,): (String,) = p.parse()?;
        let head = c.chain.head().header.number;
        let (kind, from) = c.filters.poll(&id, head).ok_or_else(filter_not_found)?;
        match kind {
            FilterKind::Blocks => {
                let view = read(c)?;
                let mut hashes = Vec::new();
                for n in from..=head {
                    if let Some(h) = view.header(n).map_err(internal)? {
                        hashes.push(h.hash);
                    }
                }
                Ok(serde_json::to_value(hashes).unwrap_or_default())
            }
            // Blocks are sealed on arrival, so nothing stays pending long enough to report.
            FilterKind::PendingTransactions => Ok(Value::Array(Vec::new())),
            FilterKind::Logs(filter) => {
                let to = filter.get_to_block().map_or(head, |t| t.min(head));
                if from > to {
                    return Ok(Value::Array(Vec::new()));
                }
                let window = (*filter).clone().from_block(from).to_block(to);
                Ok(serde_json::to_value(get_logs(c, &window)?).unwrap_or_default())
            }
        }
    })?;
    m.register_method(
        "eth_getFilterLogs",
        |p, c, _| -> RpcResult<Vec<alloy_rpc_types_eth::Log>> {
            let (id,): (String,) = p.parse()?;
            match c.filters.get(&id).ok_or_else(filter_not_found)? {
                FilterKind::Logs(filter) => get_logs(c, &filter),
                _ => Err(server("filter is not a log filter")),
            }
        },
    )?;
    m.register_method(
        "openledger_getProof",
        |p, c, _| -> RpcResult<crate::commitment::StateProof> {
            let mut seq = p.sequence();
            let address: Address = seq.next()?;
            let slots: Option<Vec<U256>> = seq.optional_next()?;
            let block: Option<BlockId> = seq.optional_next()?;
            let view = read(c)?;
            let header = resolve(&view, block)?;
            view.proof(address, &slots.unwrap_or_default(), header.header.number)
                .map_err(internal)
        },
    )?;
    m.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |p, pending, c, _| async move {
            subscribe(p, pending, c).await;
            Ok(())
        },
    )?;
    Ok(())
}

fn filter_not_found() -> ErrorObjectOwned {
    server("filter not found")
}

fn too_many_filters() -> ErrorObjectOwned {
    server(format!(
        "too many filters installed (at most {MAX_FILTERS})"
    ))
}

fn tx_error(e: TxError) -> ErrorObjectOwned {
    match e {
        TxError::Decode(_) | TxError::Oversized { .. } => invalid_params(e.to_string()),
        TxError::StateUnavailable(_) => internal(e),
        _ => server(e.to_string()),
    }
}

fn read(c: &RpcContext) -> RpcResult<ReadView> {
    c.chain.store.read().map_err(internal)
}

fn is_pending(block: Option<BlockId>) -> bool {
    matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending)))
}

/// The block a parameter names, or `None` if it does not exist.
fn lookup(view: &ReadView, block: BlockId) -> RpcResult<Option<SealedHeader>> {
    let number = match block {
        BlockId::Hash(h) => match view.block_number(h.block_hash).map_err(internal)? {
            Some(n) => n,
            None => return Ok(None),
        },
        BlockId::Number(tag) => match tag {
            BlockNumberOrTag::Number(n) => n,
            BlockNumberOrTag::Earliest => 0,
            // One sequencer, instant finality: the head is also safe and finalized.
            _ => return view.head().map_err(internal),
        },
    };
    view.header(number).map_err(internal)
}

/// A block with transaction hashes, or full transactions when `full`; `None` if unknown.
fn get_block(
    c: &RpcContext,
    block: BlockId,
    full: Option<bool>,
) -> RpcResult<Option<alloy_rpc_types_eth::Block>> {
    let view = read(c)?;
    let Some(header) = lookup(&view, block)? else {
        return Ok(None);
    };
    rpc_block(&view, &header, full.unwrap_or(false))
        .map(Some)
        .map_err(internal)
}

/// Like [`lookup`] but a missing block is an error ("header not found"); default `latest`.
fn resolve(view: &ReadView, block: Option<BlockId>) -> RpcResult<SealedHeader> {
    lookup(view, block.unwrap_or(BlockId::latest()))?.ok_or_else(header_not_found)
}

fn address_and_state(
    p: &Params<'_>,
    c: &RpcContext,
) -> RpcResult<(Address, crate::store::StateAt)> {
    let mut seq = p.sequence();
    let address: Address = seq.next()?;
    let block: Option<BlockId> = seq.optional_next()?;
    Ok((address, state_for(c, block)?.1))
}

/// The header of `block` (default latest) and the state after it.
fn state_for(
    c: &RpcContext,
    block: Option<BlockId>,
) -> RpcResult<(SealedHeader, crate::store::StateAt)> {
    let view = read(c)?;
    let header = resolve(&view, block)?;
    let state = view.state_at(header.header.number).map_err(internal)?;
    Ok((header, state))
}

/// Executes a call request on `state` (after block `header`), in the context of the block
/// after it.
fn run_call(
    c: &RpcContext,
    request: TransactionRequest,
    (header, state): &(SealedHeader, crate::store::StateAt),
    gas_override: Option<u64>,
) -> RpcResult<CallOutcome> {
    let h = &header.header;
    let ctx = BlockContext {
        number: h.number + 1,
        timestamp: h.timestamp.max(crate::consensus::unix_now()),
        beneficiary: c.chain.beneficiary,
        base_fee: h.base_fee_per_gas.unwrap_or_default(),
        gas_limit: h.gas_limit,
        prevrandao: keccak256(header.hash),
    };
    let gas_limit = gas_override
        .or(request.gas)
        .unwrap_or(h.gas_limit)
        .min(h.gas_limit);
    let caller = request.from.unwrap_or_default();
    let data = request.input.input().cloned().unwrap_or_default();
    let kind = request.to.unwrap_or(TxKind::Create);
    let (tx_type, gas_price, tip) = match (request.max_fee_per_gas, request.gas_price) {
        (Some(max_fee), _) => (2u8, max_fee, request.max_priority_fee_per_gas.or(Some(0))),
        (None, Some(price)) => (
            if request.access_list.is_some() { 1 } else { 0 },
            price,
            None,
        ),
        (None, None) => (if request.access_list.is_some() { 1 } else { 0 }, 0, None),
    };
    let tx = TxEnv {
        tx_type,
        caller,
        gas_limit,
        gas_price,
        kind,
        value: request.value.unwrap_or_default(),
        data,
        nonce: request.nonce.unwrap_or_default(),
        chain_id: Some(c.chain.spec.chain_id),
        access_list: request.access_list.unwrap_or_default(),
        gas_priority_fee: tip,
        ..TxEnv::default()
    };
    executor::call(&c.chain.spec, state, &ctx, tx).map_err(|e| match e {
        executor::CallError::State(e) => internal(e),
        executor::CallError::Invalid(m) => server(m),
    })
}

/// Smallest gas limit with which the request succeeds, by binary search (as geth).
fn estimate_gas(
    c: &RpcContext,
    request: TransactionRequest,
    block: Option<BlockId>,
) -> RpcResult<u64> {
    // Resolve the block once, so every probe of the search runs on the same state.
    let at = state_for(c, block)?;
    let gas_limit = at.0.header.gas_limit;
    let cap = request.gas.unwrap_or(gas_limit).min(gas_limit);
    let first = run_call(c, request.clone(), &at, Some(cap))?;
    if !first.success {
        return Err(match first.halt {
            Some(_) => server(format!("gas required exceeds allowance ({cap})")),
            None => error::reverted(&first.output),
        });
    }
    // Gas used is a lower bound; a limit of used·64/63 usually passes (EIP-150's reserve).
    let mut lo = first.gas_used.saturating_sub(1);
    let mut hi = cap;
    let guess = (first.gas_used * 64 / 63 + 2_300).min(cap);
    if run_call(c, request.clone(), &at, Some(guess))?.success {
        hi = guess;
    } else {
        lo = guess;
    }
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if run_call(c, request.clone(), &at, Some(mid))?.success {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn get_logs(c: &RpcContext, filter: &Filter) -> RpcResult<Vec<alloy_rpc_types_eth::Log>> {
    let view = read(c)?;
    let head = view
        .head()
        .map_err(internal)?
        .ok_or_else(header_not_found)?
        .header
        .number;
    let number_of = |tag: Option<BlockNumberOrTag>, default: u64| -> RpcResult<u64> {
        Ok(match tag {
            None => default,
            Some(BlockNumberOrTag::Number(n)) => n,
            Some(BlockNumberOrTag::Earliest) => 0,
            Some(_) => head,
        })
    };
    let (from, to) = match &filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let n = view
                .block_number(*hash)
                .map_err(internal)?
                .ok_or_else(|| server("unknown block"))?;
            (n, n)
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => (
            number_of(*from_block, head)?,
            number_of(*to_block, head)?.min(head),
        ),
    };
    if from > to {
        return if from > head {
            Ok(Vec::new())
        } else {
            Err(invalid_params("invalid block range params"))
        };
    }
    if to - from >= c.config.max_log_range {
        return Err(ErrorObjectOwned::owned(
            error::LIMIT_EXCEEDED,
            format!(
                "block range too large: at most {} blocks per query",
                c.config.max_log_range
            ),
            None::<()>,
        ));
    }
    let addresses: Vec<Address> = filter.address.iter().copied().collect();
    let first_topics: Vec<B256> = filter.topics[0].iter().copied().collect();
    let mut out = Vec::new();
    for number in view
        .log_candidate_blocks(from, to, &addresses, &first_topics)
        .map_err(internal)?
    {
        let Some(header) = view.header(number).map_err(internal)? else {
            continue;
        };
        if !filter.matches_bloom(header.header.logs_bloom) {
            continue;
        }
        for (i, hash) in view
            .block_tx_hashes(number)
            .map_err(internal)?
            .into_iter()
            .enumerate()
        {
            let Some(receipt) = view.receipt(hash).map_err(internal)? else {
                continue;
            };
            for log in rpc_logs(&receipt, hash, i as u64, &header) {
                if filter.matches(&log.inner) {
                    out.push(log);
                    if out.len() > c.config.max_logs {
                        return Err(ErrorObjectOwned::owned(
                            error::LIMIT_EXCEEDED,
                            format!("query returned more than {} results", c.config.max_logs),
                            None::<()>,
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn fee_history(
    c: &RpcContext,
    count: Value,
    newest: BlockNumberOrTag,
    percentiles: Vec<f64>,
) -> RpcResult<FeeHistory> {
    let count = match &count {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_params("blockCount must be a number"))?
    .min(1024);
    if percentiles.windows(2).any(|w| w[0] > w[1])
        || percentiles.iter().any(|p| !(0.0..=100.0).contains(p))
    {
        return Err(invalid_params(
            "invalid reward percentiles: must be ascending values in [0, 100]",
        ));
    }
    let view = read(c)?;
    let newest = lookup(&view, BlockId::Number(newest))?
        .ok_or_else(header_not_found)?
        .header
        .number;
    let oldest = (newest + 1).saturating_sub(count);
    let mut base_fee_per_gas = Vec::new();
    let mut gas_used_ratio = Vec::new();
    let mut reward = Vec::new();
    let mut last = None;
    for number in oldest..=newest {
        if count == 0 {
            break;
        }
        let header = view
            .header(number)
            .map_err(internal)?
            .ok_or_else(header_not_found)?;
        let h = &header.header;
        let base_fee = h.base_fee_per_gas.unwrap_or_default();
        base_fee_per_gas.push(base_fee as u128);
        gas_used_ratio.push(if h.gas_limit == 0 {
            0.0
        } else {
            h.gas_used as f64 / h.gas_limit as f64
        });
        if !percentiles.is_empty() {
            reward.push(block_rewards(
                &view,
                number,
                base_fee,
                h.gas_used,
                &percentiles,
            )?);
        }
        last = Some(header);
    }
    if last.is_some() {
        // The base fee of the block after the newest one: stored if it exists, else predicted
        // with the current protocol parameters.
        let next = match view.header(newest + 1).map_err(internal)? {
            Some(h) => h.header.base_fee_per_gas.unwrap_or_default(),
            None => c.chain.next_block().map_err(internal)?.base_fee,
        };
        base_fee_per_gas.push(next as u128);
    }
    Ok(FeeHistory {
        base_fee_per_gas,
        gas_used_ratio,
        base_fee_per_blob_gas: Vec::new(),
        blob_gas_used_ratio: Vec::new(),
        oldest_block: oldest,
        reward: (!percentiles.is_empty()).then_some(reward),
    })
}

/// Effective priority fees at the given gas-weighted percentiles of a block, as geth computes.
fn block_rewards(
    view: &ReadView,
    number: u64,
    base_fee: u64,
    gas_used: u64,
    percentiles: &[f64],
) -> RpcResult<Vec<u128>> {
    let mut tips = Vec::new();
    for hash in view.block_tx_hashes(number).map_err(internal)? {
        let (Some(tx), Some(receipt)) = (
            view.tx(hash).map_err(internal)?,
            view.receipt(hash).map_err(internal)?,
        ) else {
            continue;
        };
        let envelope = super::types::decode_envelope(&tx).map_err(internal)?;
        let tip = envelope.effective_tip_per_gas(base_fee).unwrap_or_default();
        tips.push((tip, receipt.gas_used));
    }
    if tips.is_empty() {
        return Ok(vec![0; percentiles.len()]);
    }
    tips.sort_by_key(|t| t.0);
    let mut out = Vec::with_capacity(percentiles.len());
    let (mut i, mut sum) = (0usize, tips[0].1);
    for p in percentiles {
        let threshold = (gas_used as f64 * p / 100.0) as u64;
        while sum < threshold && i + 1 < tips.len() {
            i += 1;
            sum += tips[i].1;
        }
        out.push(tips[i].0);
    }
    Ok(out)
}

async fn subscribe(p: Params<'static>, pending: PendingSubscriptionSink, c: Arc<RpcContext>) {
    let mut seq = p.sequence();
    let kind: String = match seq.next() {
        Ok(k) => k,
        Err(e) => return pending.reject(e).await,
    };
    let filter: Option<Filter> = match kind.as_str() {
        "newHeads" => None,
        "logs" => match seq.optional_next::<Filter>() {
            Ok(f) => Some(f.unwrap_or_default()),
            Err(e) => return pending.reject(e).await,
        },
        other => {
            return pending
                .reject(invalid_params(format!(
                    "unsupported subscription {other:?}: use newHeads or logs"
                )))
                .await;
        }
    };
    let mut blocks = c.chain.blocks.subscribe();
    let Ok(sink) = pending.accept().await else {
        return;
    };
    loop {
        let block: Arc<NewBlock> = match blocks.recv().await {
            Ok(b) => b,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let messages: Vec<Value> = match &filter {
            None => vec![serde_json::to_value(rpc_header(&block.header)).unwrap_or_default()],
            Some(f) => block_logs(&block)
                .into_iter()
                .filter(|l| f.matches(&l.inner))
                .map(|l| serde_json::to_value(l).unwrap_or_default())
                .collect(),
        };
        for m in messages {
            let Ok(raw) = serde_json::value::to_raw_value(&m) else {
                continue;
            };
            if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                return;
            }
        }
    }
}

fn block_logs(block: &NewBlock) -> Vec<alloy_rpc_types_eth::Log> {
    block
        .logs
        .iter()
        .enumerate()
        .map(|(i, (tx_hash, tx_index, log))| alloy_rpc_types_eth::Log {
            inner: log.clone(),
            block_hash: Some(block.header.hash),
            block_number: Some(block.header.header.number),
            block_timestamp: Some(block.header.header.timestamp),
            transaction_hash: Some(*tx_hash),
            transaction_index: Some(*tx_index),
            log_index: Some(i as u64),
            removed: false,
        })
        .collect()
}
