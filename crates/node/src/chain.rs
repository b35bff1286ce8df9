//! The chain service: turns ordered transactions into committed blocks.
//!
//! It owns the store, the pool and the executor wiring, and knows nothing about who decides the
//! order of transactions or when a block is due — that is the consensus driver's job
//! ([`crate::consensus`]). Every driver calls [`Chain::produce_block`] with the same kind of
//! input, so Solo and a BFT engine share one execution path.

use crate::pool::Pool;
use crate::store::{BlockDraft, SealedHeader, Store, StoreError, StoredReceipt, StoredTx};
use alloy_consensus::proofs::{calculate_receipt_root, calculate_transaction_root};
use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header, Receipt, ReceiptEnvelope, TxType};
use alloy_eips::eip2718::Typed2718;
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Bloom, Log};
use openledger_chain::modules::protocol_params::{
    self, BASE_FEE_ELASTICITY, BASE_FEE_MAX_CHANGE_DENOMINATOR, BLOCK_GAS_LIMIT,
};
use openledger_chain::spec::next_base_fee;
use openledger_chain::{BlockContext, ChainSpec, Genesis, RecoveredTx, StateView, TxError};
use openledger_primitives::{Address, B256, Bytes, keccak256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A committed block as subscribers see it.
#[derive(Debug, Clone)]
pub struct NewBlock {
    pub header: SealedHeader,
    /// Every log of the block with its transaction hash and index, in order.
    pub logs: Vec<(B256, u64, Log)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block execution failed: {0}")]
    Execution(String),
    #[error("the database at {path} belongs to chain {found}, not {expected}")]
    WrongChain {
        path: String,
        found: String,
        expected: String,
    },
}

/// Fee-market figures for the next block, read from `ProtocolParams` at the head.
#[derive(Debug, Clone, Copy)]
pub struct NextBlock {
    pub number: u64,
    pub base_fee: u64,
    pub gas_limit: u64,
}

pub struct Chain {
    pub spec: ChainSpec,
    pub store: Store,
    pub pool: Pool,
    /// Receives priority tips of the blocks this node produces.
    pub beneficiary: Address,
    pub blocks: broadcast::Sender<Arc<NewBlock>>,
    /// One block at a time.
    producing: Mutex<()>,
}

impl Chain {
    /// Opens the chain database under `dir`, writing genesis if it is new.
    pub fn open(
        dir: &Path,
        spec: ChainSpec,
        genesis: &Genesis,
        beneficiary: Address,
    ) -> Result<Self, ChainError> {
        let path = dir.join("chain.redb");
        let store = Store::open(&path)?;
        let head = match store.head() {
            Some(head) => head,
            None => store.commit_block(genesis_draft(&spec, genesis))?,
        };
        let chain_id_in_db = store
            .read()?
            .header(0)?
            .map(|h| h.header.extra_data.clone());
        let expected = chain_tag(spec.chain_id);
        if let Some(found) = chain_id_in_db
            && found != expected
        {
            return Err(ChainError::WrongChain {
                path: path.display().to_string(),
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: String::from_utf8_lossy(&expected).into_owned(),
            });
        }
        let pool = Pool::new(head.header.number);
        Ok(Self {
            spec,
            store,
            pool,
            beneficiary,
            blocks: broadcast::channel(1024).0,
            producing: Mutex::new(()),
        })
    }

    pub fn head(&self) -> SealedHeader {
        self.store.head().expect("genesis is written on open")
    }

    /// Base fee and gas limit of the block after the head.
    pub fn next_block(&self) -> Result<NextBlock, ChainError> {
        let head = self.head();
        let state = self.store.read()?.state_at(head.header.number)?;
        next_block_after(&head, &state).map_err(|e| ChainError::Execution(e.to_string()))
    }

    /// Decodes, checks and pools a raw transaction.
    pub fn submit(&self, raw: &[u8]) -> Result<B256, TxError> {
        let tx = RecoveredTx::decode(raw, self.spec.chain_id, self.spec.max_tx_bytes)?;
        let head = self.head();
        let unavailable = |e: &dyn std::fmt::Display| TxError::StateUnavailable(e.to_string());
        let read = self.store.read().map_err(|e| unavailable(&e))?;
        let state = read
            .state_at(head.header.number)
            .map_err(|e| unavailable(&e))?;
        let next = next_block_after(&head, &state).map_err(|e| unavailable(&e))?;
        tx.check_static(self.spec.hardfork, next.gas_limit)?;
        self.pool.add(tx, &state, next.base_fee)
    }

    /// Executes the pool's pending transactions (in the order given) as the next block and
    /// commits it. Returns `None` when `allow_empty` is false and there is nothing to include.
    pub fn produce_block(
        &self,
        timestamp: u64,
        allow_empty: bool,
    ) -> Result<Option<Arc<NewBlock>>, ChainError> {
        let _guard = self.producing.lock().expect("producer lock");
        let head = self.head();
        let read = self.store.read()?;
        let state = read.state_at(head.header.number)?;
        let next =
            next_block_after(&head, &state).map_err(|e| ChainError::Execution(e.to_string()))?;
        let txs = self.pool.peek(next.gas_limit);
        if txs.is_empty() && !allow_empty {
            return Ok(None);
        }
        let ctx = BlockContext {
            number: next.number,
            timestamp: timestamp.max(head.header.timestamp),
            beneficiary: self.beneficiary,
            base_fee: next.base_fee,
            gas_limit: next.gas_limit,
            prevrandao: keccak256(head.hash),
        };
        let executed = openledger_chain::execute_block(&self.spec, &state, &ctx, txs)
            .map_err(|e| ChainError::Execution(e.to_string()))?;
        drop(state);
        drop(read);

        let mut receipts = Vec::with_capacity(executed.txs.len());
        let mut envelopes = Vec::with_capacity(executed.txs.len());
        let mut records = Vec::with_capacity(executed.txs.len());
        let mut bloom = Bloom::default();
        let mut logs = Vec::new();
        let mut log_index = 0u64;
        for (i, t) in executed.txs.iter().enumerate() {
            let receipt = Receipt {
                status: t.success.into(),
                cumulative_gas_used: t.cumulative_gas_used,
                logs: t.logs.clone(),
            }
            .with_bloom();
            bloom.accrue_bloom(&receipt.logs_bloom);
            let ty = TxType::try_from(t.tx.envelope.ty()).expect("only known types are admitted");
            receipts.push(ReceiptEnvelope::from_typed(ty, receipt));
            envelopes.push(t.tx.envelope.clone());
            for log in &t.logs {
                logs.push((t.tx.hash, i as u64, log.clone()));
            }
            records.push((
                t.tx.hash,
                StoredTx {
                    block_number: ctx.number,
                    index: i as u32,
                    sender: t.tx.sender,
                    raw: Bytes::from(t.tx.encoded()),
                },
                StoredReceipt {
                    success: t.success,
                    gas_used: t.gas_used,
                    cumulative_gas_used: t.cumulative_gas_used,
                    effective_gas_price: t.effective_gas_price,
                    contract_address: t.contract_address,
                    logs: t.logs.clone(),
                    first_log_index: log_index,
                },
            ));
            log_index += t.logs.len() as u64;
        }
        let header = Header {
            parent_hash: head.hash,
            beneficiary: ctx.beneficiary,
            state_root: B256::ZERO,
            transactions_root: calculate_transaction_root(&envelopes),
            receipts_root: calculate_receipt_root(&receipts),
            logs_bloom: bloom,
            difficulty: Default::default(),
            number: ctx.number,
            gas_limit: ctx.gas_limit,
            gas_used: executed.gas_used,
            timestamp: ctx.timestamp,
            extra_data: Bytes::new(),
            mix_hash: ctx.prevrandao,
            nonce: Default::default(),
            base_fee_per_gas: Some(ctx.base_fee),
            ..prague_header()
        };
        let included: Vec<B256> = executed.txs.iter().map(|t| t.tx.hash).collect();
        let dropped: Vec<B256> = executed
            .skipped
            .iter()
            .filter(|s| !s.retry)
            .map(|s| s.tx.hash)
            .collect();
        for s in &executed.skipped {
            tracing::debug!(tx = %s.tx.hash, reason = %s.reason, "transaction left out of block");
        }
        let sealed = self.store.commit_block(BlockDraft {
            header,
            txs: records,
            diff: executed.diff,
        })?;
        self.pool.remove(included.into_iter().chain(dropped));
        let block = Arc::new(NewBlock {
            header: sealed,
            logs,
        });
        self.pool.committed.send_replace(block.header.header.number);
        let _ = self.blocks.send(block.clone());
        Ok(Some(block))
    }
}

/// The tag genesis carries in `extraData`, so a database is never opened for another chain.
fn chain_tag(chain_id: u64) -> Bytes {
    Bytes::from(format!("openledger:{chain_id}").into_bytes())
}

fn next_block_after(
    head: &SealedHeader,
    state: &impl StateView,
) -> Result<NextBlock, openledger_chain::StateError> {
    let denominator = protocol_params::read_u64(state, BASE_FEE_MAX_CHANGE_DENOMINATOR)?;
    let elasticity = protocol_params::read_u64(state, BASE_FEE_ELASTICITY)?;
    let gas_limit = protocol_params::read_u64(state, BLOCK_GAS_LIMIT)?;
    let h = &head.header;
    let parent_base_fee = h.base_fee_per_gas.unwrap_or_default();
    // Like the London fork block, the first block keeps the initial base fee; the market
    // adjusts from there (as anvil does, so fees match it block for block).
    let base_fee = if h.number == 0 {
        parent_base_fee
    } else {
        next_base_fee(
            h.gas_used,
            h.gas_limit,
            parent_base_fee,
            denominator,
            elasticity,
        )
    };
    Ok(NextBlock {
        number: h.number + 1,
        base_fee,
        gas_limit,
    })
}

/// Header fields that Prague-era clients expect to be present, with this chain's values: no
/// withdrawals, blobs, beacon root or execution requests.
fn prague_header() -> Header {
    Header {
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        withdrawals_root: Some(alloy_consensus::constants::EMPTY_WITHDRAWALS),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    }
}

fn genesis_draft(spec: &ChainSpec, genesis: &Genesis) -> BlockDraft {
    let gas_limit = genesis
        .params
        .iter()
        .find(|(n, _)| n == BLOCK_GAS_LIMIT)
        .map(|(_, v)| v.saturating_to())
        .unwrap_or(30_000_000);
    let header = Header {
        transactions_root: alloy_consensus::constants::EMPTY_ROOT_HASH,
        receipts_root: alloy_consensus::constants::EMPTY_ROOT_HASH,
        gas_limit,
        timestamp: genesis.timestamp,
        extra_data: chain_tag(spec.chain_id),
        base_fee_per_gas: Some(spec.initial_base_fee),
        ..prague_header()
    };
    BlockDraft {
        header,
        txs: Vec::new(),
        diff: genesis.state(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitment::ProofError;
    use openledger_chain::modules::protocol_params::slot;
    use openledger_chain::test_utils::{CHAIN_ID, key, signed, signed_with_fee};
    use openledger_primitives::U256;
    use openledger_primitives::addresses::{PROTOCOL_PARAMS, TREASURY};
    use openledger_primitives::units::ONE_OPEN;

    fn genesis() -> Genesis {
        Genesis {
            alloc: (0..3)
                .map(|i| (key(i).address(), ONE_OPEN * U256::from(100)))
                .collect(),
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> Chain {
        Chain::open(
            dir,
            ChainSpec::devnet(CHAIN_ID),
            &genesis(),
            Address::repeat_byte(0xbe),
        )
        .unwrap()
    }

    fn send(chain: &Chain, from: u8, nonce: u64, value: u64) -> B256 {
        let raw = signed(
            &key(from),
            nonce,
            alloy_primitives::TxKind::Call(Address::repeat_byte(9)),
            U256::from(value),
            Bytes::new(),
            21_000,
        );
        chain.submit(&raw).unwrap()
    }

    fn balance_at(chain: &Chain, who: Address, number: u64) -> U256 {
        let state = chain.store.read().unwrap().state_at(number).unwrap();
        state
            .account(who)
            .unwrap()
            .map(|a| a.balance)
            .unwrap_or_default()
    }

    #[test]
    fn restart_keeps_committed_blocks_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let (hash, head, root) = {
            let chain = open(dir.path());
            let hash = send(&chain, 0, 0, 7);
            let block = chain.produce_block(100, false).unwrap().unwrap();
            (
                hash,
                block.header.header.number,
                block.header.header.state_root,
            )
        };
        let chain = open(dir.path());
        assert_eq!(chain.head().header.number, head);
        assert_eq!(chain.head().header.state_root, root);
        assert_eq!(
            balance_at(&chain, Address::repeat_byte(9), head),
            U256::from(7)
        );
        let read = chain.store.read().unwrap();
        assert!(read.receipt(hash).unwrap().unwrap().success);
        assert_eq!(read.tx(hash).unwrap().unwrap().block_number, head);
        // And it builds on the old head.
        send(&chain, 0, 1, 1);
        let next = chain.produce_block(101, false).unwrap().unwrap();
        assert_eq!(
            next.header.header.parent_hash,
            chain
                .store
                .read()
                .unwrap()
                .header(head)
                .unwrap()
                .unwrap()
                .hash
        );
    }

    #[test]
    fn a_database_of_another_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let other = Chain::open(dir.path(), ChainSpec::devnet(7), &genesis(), Address::ZERO);
        assert!(matches!(other, Err(ChainError::WrongChain { .. })));
    }

    #[test]
    fn old_blocks_keep_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        let sender = key(0).address();
        send(&chain, 0, 0, 5);
        chain.produce_block(1, false).unwrap();
        send(&chain, 0, 1, 5);
        chain.produce_block(2, false).unwrap();
        let b0 = balance_at(&chain, sender, 0);
        let b1 = balance_at(&chain, sender, 1);
        let b2 = balance_at(&chain, sender, 2);
        assert_eq!(b0, ONE_OPEN * U256::from(100));
        assert!(b0 > b1 && b1 > b2);
        assert!(balance_at(&chain, TREASURY, 2) > balance_at(&chain, TREASURY, 1));
    }

    #[test]
    fn proofs_verify_against_the_header_and_fail_when_tampered() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        send(&chain, 0, 0, 5);
        let head = chain
            .produce_block(1, false)
            .unwrap()
            .unwrap()
            .header
            .clone();
        let read = chain.store.read().unwrap();
        let root = head.header.state_root;

        let proof = read.proof(key(0).address(), &[], 1).unwrap();
        proof.verify(root).unwrap();
        assert_eq!(proof.account.as_ref().unwrap().nonce, 1);

        let mut forged = proof.clone();
        forged.account.as_mut().unwrap().balance += U256::from(1);
        assert!(matches!(
            forged.verify(root),
            Err(ProofError::Invalid { .. })
        ));
        assert!(matches!(
            proof.verify(B256::repeat_byte(1)),
            Err(ProofError::RootMismatch { .. })
        ));

        let params = read
            .proof(
                PROTOCOL_PARAMS,
                &[slot(BLOCK_GAS_LIMIT), U256::from(12345)],
                1,
            )
            .unwrap();
        params.verify(root).unwrap();
        assert_eq!(params.storage[0].value, U256::from(30_000_000));
        assert_eq!(
            params.storage[1].value,
            U256::ZERO,
            "an unset slot is proven absent"
        );

        let nobody = read.proof(Address::repeat_byte(0x77), &[], 1).unwrap();
        assert!(nobody.account.is_none());
        nobody.verify(root).unwrap();

        // A proof at an older block checks against that block's root, not the head's.
        let old = read.proof(key(0).address(), &[], 0).unwrap();
        old.verify(read.header(0).unwrap().unwrap().header.state_root)
            .unwrap();
        assert!(old.verify(root).is_err());
    }

    #[test]
    fn empty_blocks_keep_the_state_root_and_stay_provable() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        let genesis_root = chain.head().header.state_root;
        let block = chain.produce_block(1, true).unwrap().unwrap();
        assert_eq!(block.header.header.state_root, genesis_root);
        let read = chain.store.read().unwrap();
        read.proof(key(1).address(), &[], 1)
            .unwrap()
            .verify(genesis_root)
            .unwrap();
        assert!(
            chain.produce_block(2, false).unwrap().is_none(),
            "no empty block unless asked"
        );
    }

    #[test]
    fn the_pool_refuses_replays_gaps_and_unfunded_transactions_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        send(&chain, 0, 0, 1);
        chain.produce_block(1, false).unwrap();
        let to = Address::repeat_byte(9);
        let raw = |from: u8, nonce: u64, value: U256| {
            signed(
                &key(from),
                nonce,
                alloy_primitives::TxKind::Call(to),
                value,
                Bytes::new(),
                21_000,
            )
        };
        assert!(matches!(
            chain.submit(&raw(0, 0, U256::from(1))),
            Err(TxError::NonceTooLow { .. })
        ));
        assert!(matches!(
            chain.submit(&raw(0, 3, U256::from(1))),
            Err(TxError::NonceTooHigh { .. })
        ));
        let err = chain
            .submit(&raw(1, 0, ONE_OPEN * U256::from(1_000)))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("insufficient funds for gas * price + value"),
            "{err}"
        );
        assert!(matches!(
            chain.submit(&[0xc0, 0x01]),
            Err(TxError::Decode(_))
        ));
        assert!(chain.pool.is_empty());

        let ok = raw(0, 1, U256::from(1));
        chain.submit(&ok).unwrap();
        assert_eq!(chain.submit(&ok), Err(TxError::AlreadyKnown));
        assert_eq!(chain.pool.len(), 1);
        // A transaction that cannot fit any block is refused up front.
        let huge = signed(
            &key(2),
            0,
            alloy_primitives::TxKind::Call(to),
            U256::ZERO,
            Bytes::new(),
            40_000_000,
        );
        assert_eq!(chain.submit(&huge), Err(TxError::GasLimitExceeded));
    }

    #[test]
    fn a_pending_transaction_is_replaced_only_by_a_ten_percent_higher_fee() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        let to = alloy_primitives::TxKind::Call(Address::repeat_byte(9));
        let with_fee = |fee: u128, value: U256| {
            signed_with_fee(&key(0), 0, to, value, Bytes::new(), 21_000, fee)
        };
        chain
            .submit(&with_fee(10_000_000_000, U256::from(1)))
            .unwrap();
        assert_eq!(
            chain.submit(&with_fee(10_500_000_000, U256::from(2))),
            Err(TxError::ReplacementUnderpriced)
        );
        let replacement = chain
            .submit(&with_fee(11_000_000_000, U256::from(3)))
            .unwrap();
        assert_eq!(chain.pool.len(), 1);
        // The replaced transaction's cost no longer counts against the sender's funds.
        let nearly_all = ONE_OPEN * U256::from(100) - U256::from(21_000u64 * 12_100_000_000u64);
        chain.submit(&with_fee(12_100_000_000, nearly_all)).unwrap();
        let block = chain.produce_block(1, false).unwrap().unwrap();
        let read = chain.store.read().unwrap();
        let included = read.block_tx_hashes(block.header.header.number).unwrap();
        assert_eq!(included.len(), 1);
        assert_ne!(
            included[0], replacement,
            "the last replacement is the one mined"
        );
        assert_eq!(balance_at(&chain, Address::repeat_byte(9), 1), nearly_all);
    }

    #[test]
    fn block_gas_limit_and_fee_market_come_from_protocol_params() {
        let dir = tempfile::tempdir().unwrap();
        let mut genesis = genesis();
        genesis.params = vec![
            (BLOCK_GAS_LIMIT.to_string(), U256::from(10_000_000)),
            (BASE_FEE_MAX_CHANGE_DENOMINATOR.to_string(), U256::from(2)),
        ];
        let chain = Chain::open(
            dir.path(),
            ChainSpec::devnet(CHAIN_ID),
            &genesis,
            Address::ZERO,
        )
        .unwrap();
        assert_eq!(chain.next_block().unwrap().gas_limit, 10_000_000);
        let to = alloy_primitives::TxKind::Call(Address::repeat_byte(9));
        let big = signed(&key(0), 0, to, U256::ZERO, Bytes::new(), 15_000_000);
        assert_eq!(chain.submit(&big), Err(TxError::GasLimitExceeded));
        // Block 1 keeps the initial base fee; after an empty block 1 it halves (denominator 2).
        chain.produce_block(1, true).unwrap();
        assert_eq!(chain.next_block().unwrap().base_fee, 500_000_000);
    }

    #[test]
    fn concurrent_arrivals_share_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let chain = open(dir.path());
        for from in 0..3 {
            for nonce in 0..4 {
                send(&chain, from, nonce, 1);
            }
        }
        let block = chain.produce_block(1, false).unwrap().unwrap();
        let read = chain.store.read().unwrap();
        assert_eq!(
            read.block_tx_hashes(block.header.header.number)
                .unwrap()
                .len(),
            12
        );
        assert!(chain.pool.is_empty());
    }
}
