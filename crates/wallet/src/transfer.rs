//! Signed EIP-1559 value transfers: building them offline and sending them through a node.

use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use serde_json::Value;

use crate::rpc::{RpcClient, RpcError};

/// Gas used by a plain value transfer to an account without code.
pub const TRANSFER_GAS_LIMIT: u64 = 21_000;

/// How long [`send_value`] waits for the transaction to be included.
pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// JSON-RPC "method not found", sent by nodes without `eth_maxPriorityFeePerGas`.
const METHOD_NOT_FOUND: i64 = -32601;

/// Everything a value transfer commits to besides the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub to: Address,
    /// Amount in wei.
    pub value: U256,
    pub nonce: u64,
    pub chain_id: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    /// Use [`TRANSFER_GAS_LIMIT`] unless `to` is a contract.
    pub gas_limit: u64,
}

/// A signed transaction ready for `eth_sendRawTransaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransfer {
    /// EIP-2718 encoding: the type byte 0x02 followed by the RLP of the signed fields.
    pub raw: Bytes,
    /// Transaction hash, keccak256 of `raw`.
    pub hash: B256,
}

/// Why a transfer could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(
        "max priority fee {max_priority_fee_per_gas} wei exceeds max fee {max_fee_per_gas} wei \
         per gas; raise the max fee or lower the tip"
    )]
    TipAboveMaxFee {
        max_fee_per_gas: u128,
        max_priority_fee_per_gas: u128,
    },

    #[error("cannot sign the transaction with {signer}: {reason}")]
    Sign { signer: Address, reason: String },

    #[error("fee computation overflowed: base fee {base_fee} wei and tip {tip} wei are absurd")]
    FeeOverflow { base_fee: u128, tip: u128 },

    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// Builds and signs an EIP-1559 transfer of `transfer.value` wei from `signer`.
pub fn build_transfer(
    signer: &PrivateKeySigner,
    transfer: &Transfer,
) -> Result<SignedTransfer, TransferError> {
    if transfer.max_priority_fee_per_gas > transfer.max_fee_per_gas {
        return Err(TransferError::TipAboveMaxFee {
            max_fee_per_gas: transfer.max_fee_per_gas,
            max_priority_fee_per_gas: transfer.max_priority_fee_per_gas,
        });
    }
    let tx = TxEip1559 {
        chain_id: transfer.chain_id,
        nonce: transfer.nonce,
        gas_limit: transfer.gas_limit,
        max_fee_per_gas: transfer.max_fee_per_gas,
        max_priority_fee_per_gas: transfer.max_priority_fee_per_gas,
        to: TxKind::Call(transfer.to),
        value: transfer.value,
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let signature =
        signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| TransferError::Sign {
                signer: signer.address(),
                reason: e.to_string(),
            })?;
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    Ok(SignedTransfer {
        raw: envelope.encoded_2718().into(),
        hash: *envelope.tx_hash(),
    })
}

/// Sends `value` wei from `signer` to `to` and waits up to [`DEFAULT_RECEIPT_TIMEOUT`] for the
/// receipt, which is returned as the node sent it (check its `status` for success).
///
/// Chain id, nonce (pending) and fees ([`fees`]) come from the node.
pub fn send_value(
    client: &RpcClient,
    signer: &PrivateKeySigner,
    to: Address,
    value: U256,
) -> Result<Value, TransferError> {
    let chain_id = client.chain_id()?;
    let nonce = client.nonce(signer.address())?;
    let (max_fee, tip) = fees(client)?;
    let transfer = Transfer {
        to,
        value,
        nonce,
        chain_id,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        gas_limit: TRANSFER_GAS_LIMIT,
    };
    let signed = build_transfer(signer, &transfer)?;
    client.send_raw(&signed.raw)?;
    Ok(client.wait_receipt(signed.hash, DEFAULT_RECEIPT_TIMEOUT)?)
}

/// `(max fee, tip)` per gas: the tip is the node's `eth_maxPriorityFeePerGas` (or gas price
/// minus base fee on nodes without that method); the max fee is twice the latest base fee plus
/// the tip, which survives several blocks of rising base fees.
fn fees(client: &RpcClient) -> Result<(u128, u128), TransferError> {
    let base_fee = client.latest_base_fee()?;
    let tip = match client.max_priority_fee() {
        Ok(tip) => tip,
        Err(e) if e.json_rpc_code() == Some(METHOD_NOT_FOUND) => {
            client.gas_price()?.saturating_sub(base_fee)
        }
        Err(e) => return Err(e.into()),
    };
    let max_fee = base_fee
        .checked_mul(2)
        .and_then(|fee| fee.checked_add(tip))
        .ok_or(TransferError::FeeOverflow { base_fee, tip })?;
    Ok((max_fee, tip))
}

/// Calls contract (or precompile) `to` with `input` and `value` wei in a signed EIP-1559
/// transaction and waits for the receipt.
///
/// The call is first estimated (`eth_estimateGas`), so a call that would revert fails here,
/// before anything is sent, with the node's error and revert data (see
/// [`RpcError::revert_data`]). The gas limit is the estimate plus a fifth.
pub fn send_call(
    client: &RpcClient,
    signer: &PrivateKeySigner,
    to: Address,
    value: U256,
    input: Bytes,
) -> Result<Value, TransferError> {
    let from = signer.address();
    let estimate: String = client.call(
        "eth_estimateGas",
        serde_json::json!([{ "from": from, "to": to, "value": value, "data": input }]),
    )?;
    let gas = u64::from_str_radix(estimate.trim_start_matches("0x"), 16).map_err(|e| {
        TransferError::Sign {
            signer: from,
            reason: format!("node returned a bad gas estimate {estimate:?}: {e}"),
        }
    })?;
    let chain_id = client.chain_id()?;
    let nonce = client.nonce(from)?;
    let (max_fee, tip) = fees(client)?;
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas + gas / 5,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input,
    };
    let signature =
        signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| TransferError::Sign {
                signer: from,
                reason: e.to_string(),
            })?;
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    let raw = envelope.encoded_2718();
    client.send_raw(&raw)?;
    Ok(client.wait_receipt(*envelope.tx_hash(), DEFAULT_RECEIPT_TIMEOUT)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::mock::{MockNode, Reply};
    use alloy_consensus::Transaction;
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_eips::eip2718::Decodable2718;
    use alloy_primitives::{address, keccak256};
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    fn dev_signer() -> PrivateKeySigner {
        DEV_KEY.parse().unwrap()
    }

    fn sample() -> Transfer {
        Transfer {
            to: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            value: U256::from(1_500_000_000_000_000_000u128),
            nonce: 3,
            chain_id: 1612,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            gas_limit: TRANSFER_GAS_LIMIT,
        }
    }

    #[test]
    fn built_transfer_decodes_to_the_same_fields_and_signer() {
        let signer = dev_signer();
        let transfer = sample();
        let signed = build_transfer(&signer, &transfer).unwrap();

        assert_eq!(signed.raw[0], 0x02, "EIP-1559 type byte");
        assert_eq!(signed.hash, keccak256(&signed.raw));
        let decoded = TxEnvelope::decode_2718(&mut signed.raw.as_ref()).unwrap();
        assert!(decoded.is_eip1559());
        assert_eq!(*decoded.tx_hash(), signed.hash);
        assert_eq!(decoded.recover_signer().unwrap(), signer.address());
        assert_eq!(
            signer.address(),
            address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        assert_eq!(decoded.chain_id(), Some(1612));
        assert_eq!(decoded.value(), transfer.value);
        assert_eq!(decoded.to(), Some(transfer.to));
        assert_eq!(decoded.nonce(), 3);
        assert_eq!(decoded.gas_limit(), 21_000);
        assert_eq!(decoded.max_fee_per_gas(), 2_000_000_000);
        assert_eq!(decoded.max_priority_fee_per_gas(), Some(1_000_000_000));
        assert!(decoded.input().is_empty());
    }

    #[test]
    fn signing_is_deterministic() {
        let a = build_transfer(&dev_signer(), &sample()).unwrap();
        let b = build_transfer(&dev_signer(), &sample()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn tip_above_max_fee_is_refused() {
        let transfer = Transfer {
            max_priority_fee_per_gas: 3_000_000_000,
            ..sample()
        };
        let err = build_transfer(&dev_signer(), &transfer).unwrap_err();
        assert!(
            matches!(err, TransferError::TipAboveMaxFee { .. }),
            "{err:?}"
        );
    }

    /// A fake node that checks what `send_value` submits and mines it on the second poll.
    fn fake_chain(tip: Reply) -> (MockNode, Arc<Mutex<Option<TxEnvelope>>>) {
        let sent: Arc<Mutex<Option<TxEnvelope>>> = Arc::default();
        let seen = Arc::clone(&sent);
        let tip = Mutex::new(Some(tip));
        let polls = Mutex::new(0);
        let node = MockNode::start(move |method, params| match method {
            "eth_chainId" => Reply::Result(json!("0x64c")),
            "eth_getTransactionCount" => Reply::Result(json!("0x5")),
            "eth_getBlockByNumber" => Reply::Result(json!({ "baseFeePerGas": "0x3b9aca00" })),
            "eth_maxPriorityFeePerGas" => tip.lock().unwrap().take().unwrap(),
            "eth_gasPrice" => Reply::Result(json!("0x77359400")),
            "eth_sendRawTransaction" => {
                let raw = alloy_primitives::hex::decode(params[0].as_str().unwrap()).unwrap();
                let tx = TxEnvelope::decode_2718(&mut raw.as_slice()).unwrap();
                let hash = *tx.tx_hash();
                *seen.lock().unwrap() = Some(tx);
                Reply::Result(json!(hash))
            }
            "eth_getTransactionReceipt" => {
                let mut polls = polls.lock().unwrap();
                *polls += 1;
                if *polls < 2 {
                    Reply::Result(Value::Null)
                } else {
                    Reply::Result(json!({ "transactionHash": params[0], "status": "0x1" }))
                }
            }
            _ => Reply::Error {
                code: METHOD_NOT_FOUND,
                message: "method not found",
                data: None,
            },
        });
        (node, sent)
    }

    #[test]
    fn send_value_fills_chain_id_nonce_and_fees_from_the_node() {
        let (node, sent) = fake_chain(Reply::Result(json!("0x2")));
        let client = RpcClient::new(&node.url);
        let to = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let receipt = send_value(&client, &dev_signer(), to, U256::from(42)).unwrap();

        let tx = sent.lock().unwrap().clone().unwrap();
        assert_eq!(receipt["transactionHash"], json!(tx.tx_hash()));
        assert_eq!(tx.recover_signer().unwrap(), dev_signer().address());
        assert_eq!((tx.chain_id(), tx.nonce()), (Some(1612), 5));
        assert_eq!(tx.max_priority_fee_per_gas(), Some(2));
        assert_eq!(tx.max_fee_per_gas(), 2 * 1_000_000_000 + 2);
        assert_eq!(
            (tx.to(), tx.value(), tx.gas_limit()),
            (Some(to), U256::from(42), 21_000)
        );
    }

    #[test]
    fn send_value_falls_back_to_gas_price_for_the_tip() {
        let missing = Reply::Error {
            code: METHOD_NOT_FOUND,
            message: "method not found",
            data: None,
        };
        let (node, sent) = fake_chain(missing);
        let client = RpcClient::new(&node.url);
        send_value(&client, &dev_signer(), Address::ZERO, U256::from(1)).unwrap();
        let tx = sent.lock().unwrap().clone().unwrap();
        // gas price 2 gwei minus base fee 1 gwei
        assert_eq!(tx.max_priority_fee_per_gas(), Some(1_000_000_000));
        assert_eq!(tx.max_fee_per_gas(), 3_000_000_000);
    }

    #[test]
    fn send_value_reports_a_rejected_transaction() {
        let (node, _) = fake_chain(Reply::Error {
            code: -32000,
            message: "boom",
            data: None,
        });
        let client = RpcClient::new(&node.url);
        let err = send_value(&client, &dev_signer(), Address::ZERO, U256::from(1)).unwrap_err();
        assert!(
            matches!(&err, TransferError::Rpc(e) if e.json_rpc_code() == Some(-32000)),
            "{err:?}"
        );
    }
}
