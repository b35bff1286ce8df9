//! Conversions from stored records to alloy's RPC types, which serialize exactly as Ethereum
//! clients expect.

use crate::store::{ReadView, SealedHeader, StoreError, StoredReceipt, StoredTx};
use alloy_consensus::transaction::Recovered;
use alloy_consensus::{Receipt, ReceiptEnvelope, Transaction as _, TxEnvelope, TxType};
use alloy_eips::eip2718::{Decodable2718, Typed2718};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{Block, BlockTransactions, Header, Log, Transaction, TransactionReceipt};
use openledger_primitives::{B256, U256};

pub fn rpc_header(sealed: &SealedHeader) -> Header {
    let size = sealed.header.length();
    Header {
        hash: sealed.hash,
        inner: sealed.header.clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(size)),
    }
}

pub fn decode_envelope(stored: &StoredTx) -> Result<TxEnvelope, StoreError> {
    TxEnvelope::decode_2718(&mut stored.raw.as_ref()).map_err(|e| StoreError::Corrupt {
        table: "txs",
        detail: e.to_string(),
    })
}

pub fn rpc_tx(stored: &StoredTx, header: &SealedHeader) -> Result<Transaction, StoreError> {
    let envelope = decode_envelope(stored)?;
    let base_fee = header.header.base_fee_per_gas;
    Ok(Transaction {
        effective_gas_price: Some(envelope.effective_gas_price(base_fee)),
        inner: Recovered::new_unchecked(envelope, stored.sender),
        block_hash: Some(header.hash),
        block_number: Some(stored.block_number),
        transaction_index: Some(stored.index as u64),
        block_timestamp: Some(header.header.timestamp),
    })
}

pub fn rpc_logs(
    receipt: &StoredReceipt,
    tx_hash: B256,
    tx_index: u64,
    header: &SealedHeader,
) -> Vec<Log> {
    receipt
        .logs
        .iter()
        .enumerate()
        .map(|(i, log)| Log {
            inner: log.clone(),
            block_hash: Some(header.hash),
            block_number: Some(header.header.number),
            block_timestamp: Some(header.header.timestamp),
            transaction_hash: Some(tx_hash),
            transaction_index: Some(tx_index),
            log_index: Some(receipt.first_log_index + i as u64),
            removed: false,
        })
        .collect()
}

pub fn rpc_receipt(
    tx_hash: B256,
    stored: &StoredTx,
    receipt: &StoredReceipt,
    header: &SealedHeader,
) -> Result<TransactionReceipt, StoreError> {
    let envelope = decode_envelope(stored)?;
    let logs = rpc_logs(receipt, tx_hash, stored.index as u64, header);
    let inner = Receipt {
        status: receipt.success.into(),
        cumulative_gas_used: receipt.cumulative_gas_used,
        logs,
    }
    .with_bloom();
    let ty = TxType::try_from(envelope.ty()).unwrap_or(TxType::Legacy);
    Ok(TransactionReceipt {
        inner: ReceiptEnvelope::from_typed(ty, inner),
        transaction_hash: tx_hash,
        transaction_index: Some(stored.index as u64),
        block_hash: Some(header.hash),
        block_number: Some(stored.block_number),
        gas_used: receipt.gas_used,
        effective_gas_price: receipt.effective_gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: stored.sender,
        to: envelope.to(),
        contract_address: receipt.contract_address,
    })
}

pub fn rpc_block(view: &ReadView, header: &SealedHeader, full: bool) -> Result<Block, StoreError> {
    let hashes = view.block_tx_hashes(header.header.number)?;
    let transactions = if full {
        let mut txs = Vec::with_capacity(hashes.len());
        for h in &hashes {
            let stored = view.tx(*h)?.ok_or_else(|| StoreError::Corrupt {
                table: "txs",
                detail: format!("transaction {h} of block {} missing", header.header.number),
            })?;
            txs.push(rpc_tx(&stored, header)?);
        }
        BlockTransactions::Full(txs)
    } else {
        BlockTransactions::Hashes(hashes)
    };
    Ok(Block {
        header: rpc_header(header),
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    })
}
