//! `Settlement`: inference fees paid out by attribution and the governed fee split (precompile
//! at [`SETTLEMENT`]).
//!
//! An operator that served inference submits usage records in batches. For each record:
//!
//! ```text
//! fee          = (promptTokens + completionTokens) · price_per_1k(model) / 1000      (floor)
//! contributors = fee · settlement.contributors_bps / 10⁴                              (floor)
//! curators     = fee · settlement.validators_bps   / 10⁴                              (floor)
//! owner        = fee · settlement.model_owner_bps  / 10⁴                              (floor)
//! contributor of share i  += contributors · ppm_i / 10⁶                               (floor)
//! each of the k curators who accepted share i's contribution += curators · ppm_i / 10⁶ / k
//! treasury     = fee − everything above (the treasury share plus every rounding remainder,
//!                and the contributor and curator parts when the record has no attribution)
//! ```
//!
//! The fee is charged from the caller's deposit in `Inference` (which checks the operator is
//! approved) and lands in this module's balance; the treasury part leaves at the end of the
//! batch and the rest waits here until its owners `claim`. The chain computes every amount
//! itself, so an operator cannot inflate a fee or pay rows the model was not trained on; and
//! it checks at the end that credits equal debits, reverting the whole batch otherwise.

use super::datanets::{contribution_payees, snapshot_datanet};
use super::inference::IInference;
use super::models::model_terms;
use super::protocol_params::{BPS, FeeSplit};
use super::storage::slot;
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::addresses::{INFERENCE, SETTLEMENT, TREASURY};
use openledger_primitives::{Address, B256, Bytes, U256};
use std::collections::{BTreeMap, BTreeSet};

mod abi {
    alloy_sol_types::sol!("solidity/ISettlement.sol");
}
pub use abi::ISettlement;
use abi::ISettlement as I;

/// Records one batch may hold (bounds a batch's gas well under a block's).
pub const MAX_BATCH: usize = 256;
/// Contributions one record may attribute to.
pub const MAX_SHARES: usize = 64;
/// Attribution shares are parts per million.
pub const PPM: u64 = 1_000_000;

fn claimable_slot(who: Address) -> U256 {
    slot("claimable", &[who.as_slice()])
}

fn earned_slot(who: Address) -> U256 {
    slot("earned", &[who.as_slice()])
}

fn by_datanet_slot(who: Address, datanet: u64) -> U256 {
    slot("earned.datanet", &[who.as_slice(), &datanet.to_be_bytes()])
}

fn by_model_slot(who: Address, model: u64) -> U256 {
    slot("earned.model", &[who.as_slice(), &model.to_be_bytes()])
}

fn contribution_slot(id: u64) -> U256 {
    slot("earned.contribution", &[&id.to_be_bytes()])
}

fn settled_slot(request: B256) -> U256 {
    slot("settled", &[request.as_slice()])
}

/// A batch's credits, summed before they are written so each slot is written once.
#[derive(Default)]
struct Ledger {
    accounts: BTreeMap<Address, U256>,
    by_datanet: BTreeMap<(Address, u64), U256>,
    by_model: BTreeMap<(Address, u64), U256>,
    contributions: BTreeMap<u64, U256>,
    treasury: U256,
}

impl Ledger {
    fn credit(&mut self, who: Address, amount: U256, model: u64, datanet: Option<u64>) {
        if amount.is_zero() {
            return;
        }
        *self.accounts.entry(who).or_default() += amount;
        *self.by_model.entry((who, model)).or_default() += amount;
        if let Some(datanet) = datanet {
            *self.by_datanet.entry((who, datanet)).or_default() += amount;
        }
    }

    fn credited(&self) -> U256 {
        self.accounts.values().fold(self.treasury, |sum, v| sum + v)
    }

    fn write(self, host: &mut dyn ModuleHost) -> Result<(), ModuleError> {
        fn add(host: &mut dyn ModuleHost, slot: U256, amount: U256) -> Result<(), ModuleError> {
            let value = host.sload(slot)? + amount;
            host.sstore(slot, value)
        }
        for (&who, &amount) in &self.accounts {
            add(host, claimable_slot(who), amount)?;
            add(host, earned_slot(who), amount)?;
        }
        for (&(who, datanet), &amount) in &self.by_datanet {
            add(host, by_datanet_slot(who, datanet), amount)?;
        }
        for (&(who, model), &amount) in &self.by_model {
            add(host, by_model_slot(who, model), amount)?;
        }
        for (&id, &amount) in &self.contributions {
            add(host, contribution_slot(id), amount)?;
        }
        if !self.treasury.is_zero() {
            host.transfer(TREASURY, self.treasury)?;
        }
        Ok(())
    }
}

/// The fee the chain charges for a record: tokens × price per 1,000 tokens, rounded down.
pub fn fee_for(tokens: u64, price_per_1k_tokens: U256) -> U256 {
    U256::from(tokens) * price_per_1k_tokens / U256::from(1_000u64)
}

/// Checks one record, charges it and adds its credits to `ledger`; returns the fee.
fn settle_one(
    host: &mut dyn ModuleHost,
    operator: Address,
    split: &FeeSplit,
    usage: &I::Usage,
    ledger: &mut Ledger,
) -> Result<U256, ModuleError> {
    let request = usage.requestId;
    let settled = settled_slot(request);
    if !host.sload(settled)?.is_zero() {
        return Err(ModuleError::revert(I::AlreadySettled {
            requestId: request,
        }));
    }
    host.sstore(settled, U256::from(1u8))?;
    let terms = model_terms(host, usage.modelId)?.ok_or(ModuleError::revert(I::UnknownModel {
        modelId: usage.modelId,
    }))?;
    let tokens = usage.promptTokens.saturating_add(usage.completionTokens);
    let fee = fee_for(tokens, terms.price_per_1k_tokens);
    if usage.fee != fee {
        return Err(ModuleError::revert(I::FeeMismatch {
            requestId: request,
            reported: usage.fee,
            computed: fee,
        }));
    }

    // The attribution must be whole and point at accepted rows the model was trained on.
    if usage.shares.len() > MAX_SHARES {
        return Err(ModuleError::revert(I::TooManyShares {
            requestId: request,
            max: MAX_SHARES as u64,
        }));
    }
    let total_ppm: u64 = usage.shares.iter().map(|s| s.partsPerMillion as u64).sum();
    if !usage.shares.is_empty() && total_ppm != PPM {
        return Err(ModuleError::revert(I::SharesNotWhole {
            requestId: request,
            partsPerMillion: total_ppm,
        }));
    }
    let mut training_datanets = BTreeSet::new();
    if !usage.shares.is_empty() {
        for &snapshot in &terms.snapshot_ids {
            if let Some(datanet) = snapshot_datanet(host, snapshot)? {
                training_datanets.insert(datanet);
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut payees = Vec::with_capacity(usage.shares.len());
    for share in &usage.shares {
        let id = share.contributionId;
        if !seen.insert(id) {
            return Err(ModuleError::revert(I::DuplicateShare {
                requestId: request,
                contributionId: id,
            }));
        }
        let payee = contribution_payees(host, id)?
            .filter(|p| p.accepted && training_datanets.contains(&p.datanet_id))
            .ok_or(ModuleError::revert(I::ContributionNotPayable {
                requestId: request,
                contributionId: id,
            }))?;
        payees.push((id, share.partsPerMillion, payee));
    }

    if fee.is_zero() {
        return Ok(fee);
    }
    host.call_module(
        INFERENCE,
        &IInference::chargeCall {
            account: usage.account,
            operator,
            amount: fee,
        }
        .abi_encode(),
    )?;

    let shares = split.split(fee);
    let model = usage.modelId;
    let mut paid = U256::ZERO;
    for (id, ppm, payee) in &payees {
        let part = |pool: U256| pool * U256::from(*ppm) / U256::from(PPM);
        let to_contributor = part(shares.contributors);
        ledger.credit(
            payee.contributor,
            to_contributor,
            model,
            Some(payee.datanet_id),
        );
        *ledger.contributions.entry(*id).or_default() += to_contributor;
        paid += to_contributor;
        if !payee.curators.is_empty() {
            let each = part(shares.validators) / U256::from(payee.curators.len());
            for &curator in &payee.curators {
                ledger.credit(curator, each, model, Some(payee.datanet_id));
                paid += each;
            }
        }
    }
    ledger.credit(terms.owner, shares.model_owner, model, None);
    paid += shares.model_owner;
    let rest = fee
        .checked_sub(paid)
        .ok_or(ModuleError::revert(I::ConservationViolated {
            debited: fee,
            credited: paid,
        }))?;
    ledger.treasury += rest;
    Ok(fee)
}

pub struct Settlement;

impl Module for Settlement {
    fn address(&self) -> Address {
        SETTLEMENT
    }

    fn name(&self) -> &'static str {
        "Settlement"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        let selector = selector(call, self.name())?;
        non_payable(call)?;
        let input = call.input;
        let caller = call.caller;
        match selector {
            I::settleCall::SELECTOR => {
                let a = decode::<I::settleCall>(self.name(), input)?;
                if a.batch.is_empty() {
                    return Err(ModuleError::revert(I::EmptyBatch {}));
                }
                if a.batch.len() > MAX_BATCH {
                    return Err(ModuleError::revert(I::BatchTooLarge {
                        max: MAX_BATCH as u64,
                    }));
                }
                let split = FeeSplit::read_from(host)?;
                if !split.is_whole() {
                    return Err(ModuleError::Fatal(format!(
                        "the fee split sums to {} bps, not {BPS}",
                        split.total_bps()
                    )));
                }
                let mut ledger = Ledger::default();
                let mut debited = U256::ZERO;
                for usage in &a.batch {
                    let fee = settle_one(host, caller, &split, usage, &mut ledger)?;
                    debited += fee;
                    emit(
                        host,
                        I::UsageSettled {
                            requestId: usage.requestId,
                            account: usage.account,
                            modelId: usage.modelId,
                            fee,
                            responseHash: usage.responseHash,
                            attributionHash: usage.attributionHash,
                        },
                    )?;
                }
                let credited = ledger.credited();
                if credited != debited {
                    return Err(ModuleError::revert(I::ConservationViolated {
                        debited,
                        credited,
                    }));
                }
                ledger.write(host)?;
                emit(
                    host,
                    I::BatchSettled {
                        operator: caller,
                        records: a.batch.len() as u64,
                        total: debited,
                    },
                )?;
                Ok(encode_u256(debited))
            }
            I::claimCall::SELECTOR => {
                let slot = claimable_slot(caller);
                let amount = host.sload(slot)?;
                if amount.is_zero() {
                    return Err(ModuleError::revert(I::NothingToClaim {}));
                }
                host.sstore(slot, U256::ZERO)?;
                host.transfer(caller, amount)?;
                emit(
                    host,
                    I::Claimed {
                        account: caller,
                        amount,
                    },
                )?;
                Ok(encode_u256(amount))
            }
            I::claimableCall::SELECTOR => {
                let a = decode::<I::claimableCall>(self.name(), input)?;
                Ok(encode_u256(host.sload(claimable_slot(a.account))?))
            }
            I::earningsCall::SELECTOR => {
                let a = decode::<I::earningsCall>(self.name(), input)?;
                Ok(encode_u256(host.sload(earned_slot(a.account))?))
            }
            I::earningsByDatanetCall::SELECTOR => {
                let a = decode::<I::earningsByDatanetCall>(self.name(), input)?;
                Ok(encode_u256(
                    host.sload(by_datanet_slot(a.account, a.datanetId))?,
                ))
            }
            I::earningsByModelCall::SELECTOR => {
                let a = decode::<I::earningsByModelCall>(self.name(), input)?;
                Ok(encode_u256(
                    host.sload(by_model_slot(a.account, a.modelId))?,
                ))
            }
            I::contributionEarningsCall::SELECTOR => {
                let a = decode::<I::contributionEarningsCall>(self.name(), input)?;
                Ok(encode_u256(
                    host.sload(contribution_slot(a.contributionId))?,
                ))
            }
            I::isSettledCall::SELECTOR => {
                let a = decode::<I::isSettledCall>(self.name(), input)?;
                let settled = !host.sload(settled_slot(a.requestId))?.is_zero();
                Ok(settled.abi_encode().into())
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::datanets::IDatanets;
    use super::super::models::IModels;
    use super::super::protocol_params::{SETTLEMENT_CONTRIBUTORS_BPS, SETTLEMENT_MODEL_OWNER_BPS};
    use super::super::test_chain::{Chain, reverted_with};
    use super::*;
    use crate::genesis::Genesis;
    use crate::test_utils::key;
    use alloy_signer_local::PrivateKeySigner;
    use alloy_sol_types::SolError;
    use openledger_primitives::addresses::{DATANETS, MODELS};
    use openledger_primitives::units::ONE_OPEN;

    /// Who is who in these tests.
    struct Cast {
        owner: PrivateKeySigner,
        curators: [PrivateKeySigner; 2],
        alice: PrivateKeySigner,
        bob: PrivateKeySigner,
        caller: PrivateKeySigner,
        operator: PrivateKeySigner,
    }

    const ACCOUNTS: u8 = 7;

    fn cast() -> Cast {
        Cast {
            owner: key(0),
            curators: [key(1), key(2)],
            alice: key(3),
            bob: key(4),
            caller: key(5),
            operator: key(6),
        }
    }

    fn ok(tx: &crate::executor::ExecutedTx) {
        assert!(tx.success, "reverted: {:?}", tx.output);
    }

    fn open(n: u64) -> U256 {
        ONE_OPEN * U256::from(n)
    }

    /// A datanet whose two curators accepted contributions 1 (alice) and 2 (bob); contribution 3
    /// (bob) is still pending; snapshot 1; model 1 trained on it at 1 OPEN per 1,000 tokens,
    /// owned by `owner`; a second datanet (2) with an accepted contribution 4 the model was not
    /// trained on. The caller deposited 10 OPEN and approved the operator.
    fn world(who: &Cast, params: &[(&str, u64)]) -> Chain {
        let genesis = Genesis {
            alloc: (0..ACCOUNTS)
                .map(|i| (key(i).address(), open(100)))
                .collect(),
            params: params
                .iter()
                .map(|&(n, v)| (n.to_string(), U256::from(v)))
                .collect(),
            timestamp: 0,
        };
        let mut c = Chain::with_genesis(DATANETS, &genesis);
        for name in ["legal", "other"] {
            let create = IDatanets::createDatanetCall {
                name: name.into(),
                descriptionHash: B256::repeat_byte(1),
                license: "CC-BY-4.0".into(),
                schema: 1,
                permissioned: false,
                allowlistOnly: false,
                reviewQuorum: 2,
                curators: who.curators.iter().map(|k| k.address()).collect(),
            };
            ok(&c.send(&who.owner, create.abi_encode(), open(10)));
        }
        let contribute = |datanet: u64, root: u8| {
            IDatanets::contributeCall {
                datanetId: datanet,
                contentRoot: B256::repeat_byte(root),
                rowCount: 10,
                byteCount: 100,
            }
            .abi_encode()
        };
        ok(&c.send(&who.alice, contribute(1, 0xa1), U256::ZERO));
        ok(&c.send(&who.bob, contribute(1, 0xb1), U256::ZERO));
        ok(&c.send(&who.bob, contribute(1, 0xb2), U256::ZERO));
        ok(&c.send(&who.bob, contribute(2, 0xb3), U256::ZERO));
        for id in [1, 2, 4] {
            for curator in &who.curators {
                let review = IDatanets::reviewCall {
                    contributionId: id,
                    accept: true,
                    reasonCode: 0,
                };
                ok(&c.send(curator, review.abi_encode(), U256::ZERO));
            }
        }
        let snapshot = IDatanets::publishSnapshotCall {
            datanetId: 1,
            root: B256::repeat_byte(0x5e),
            rowCount: 20,
            parentSnapshotId: 0,
        };
        ok(&c.send(&who.owner, snapshot.abi_encode(), U256::ZERO));
        let register = IModels::registerBaseModelCall {
            modelHash: B256::repeat_byte(0xba),
            name: "base".into(),
        };
        ok(&c.send_to(MODELS, &who.owner, register.abi_encode(), U256::ZERO));
        let publish = IModels::publishModelCall {
            name: "legal-qa".into(),
            baseModelHash: B256::repeat_byte(0xba),
            adapterHash: B256::repeat_byte(0xad),
            manifestHash: B256::repeat_byte(0x3a),
            snapshotIds: vec![1],
            hyperparamsHash: B256::repeat_byte(0x4b),
            evalLossMilli: 1,
            evalPerplexityMilli: 1,
            pricePer1kTokens: ONE_OPEN,
        };
        ok(&c.send_to(MODELS, &who.owner, publish.abi_encode(), U256::ZERO));
        let deposit = IInference::depositCall {
            operator: who.operator.address(),
        };
        ok(&c.send_to(INFERENCE, &who.caller, deposit.abi_encode(), open(10)));
        c.to = SETTLEMENT;
        c
    }

    fn usage(request: u8, account: Address, tokens: u64, shares: &[(u64, u32)]) -> I::Usage {
        I::Usage {
            requestId: B256::repeat_byte(request),
            account,
            modelId: 1,
            promptTokens: tokens / 4,
            completionTokens: tokens - tokens / 4,
            fee: fee_for(tokens, ONE_OPEN),
            responseHash: B256::repeat_byte(0xee),
            attributionHash: B256::repeat_byte(0xaa),
            shares: shares
                .iter()
                .map(|&(id, ppm)| I::Share {
                    contributionId: id,
                    partsPerMillion: ppm,
                })
                .collect(),
        }
    }

    fn settle(batch: Vec<I::Usage>) -> Vec<u8> {
        I::settleCall { batch }.abi_encode()
    }

    fn read(c: &Chain, data: Vec<u8>) -> U256 {
        U256::from_be_slice(&c.view(data))
    }

    fn earned(c: &Chain, who: Address) -> U256 {
        read(c, I::earningsCall { account: who }.abi_encode())
    }

    fn deposit_of(c: &Chain, who: Address) -> U256 {
        let out = c.view_to(
            INFERENCE,
            IInference::depositOfCall { account: who }.abi_encode(),
        );
        IInference::depositOfCall::abi_decode_returns(&out)
            .unwrap()
            .balance
    }

    /// All OPEN there is: the accounts, the treasury, the modules and the block beneficiary.
    fn supply(c: &Chain) -> U256 {
        let mut total = c.balance(TREASURY)
            + c.balance(INFERENCE)
            + c.balance(SETTLEMENT)
            + c.balance(Address::repeat_byte(0xbe));
        for i in 0..ACCOUNTS {
            total += c.balance(key(i).address());
        }
        total
    }

    #[test]
    fn a_settled_fee_is_split_by_attribution_and_the_governed_ratios() {
        let who = cast();
        let mut c = world(&who, &[]);
        let treasury_before = c.balance(TREASURY);
        // 2,000 tokens at 1 OPEN per 1,000: a fee of 2 OPEN, 3/4 attributed to alice's row.
        let batch = vec![usage(
            1,
            who.caller.address(),
            2_000,
            &[(1, 750_000), (2, 250_000)],
        )];
        let tx = c.send(&who.operator, settle(batch.clone()), U256::ZERO);
        ok(&tx);
        let fee = open(2);
        assert_eq!(U256::from_be_slice(&tx.output), fee);
        assert_eq!(deposit_of(&c, who.caller.address()), open(8));

        // Default split: 70% contributors, 10% curators, 15% owner, 5% treasury.
        let pct = |n: u64| fee * U256::from(n) / U256::from(100u64);
        let alice = pct(70) * U256::from(3u64) / U256::from(4u64);
        assert_eq!(earned(&c, who.alice.address()), alice);
        assert_eq!(earned(&c, who.bob.address()), pct(70) / U256::from(4u64));
        for curator in &who.curators {
            // Both curators accepted both rows: half of the curators' 10% each.
            assert_eq!(earned(&c, curator.address()), pct(10) / U256::from(2u64));
        }
        assert_eq!(earned(&c, who.owner.address()), pct(15));
        // The treasury also got the gas of the block's base fee; count only the settlement.
        let base_fee = U256::from(tx.gas_used);
        assert_eq!(c.balance(TREASURY) - treasury_before - base_fee, pct(5));
        let by_datanet = I::earningsByDatanetCall {
            account: who.alice.address(),
            datanetId: 1,
        };
        assert_eq!(read(&c, by_datanet.abi_encode()), alice);
        let by_model = I::earningsByModelCall {
            account: who.owner.address(),
            modelId: 1,
        };
        assert_eq!(read(&c, by_model.abi_encode()), pct(15));
        let by_row = I::contributionEarningsCall { contributionId: 2 };
        assert_eq!(read(&c, by_row.abi_encode()), pct(70) / U256::from(4u64));

        // The same request again is refused, and so is claiming twice.
        let again = c.send(&who.operator, settle(batch), U256::ZERO);
        assert_eq!(
            reverted_with::<I::AlreadySettled>(&again).requestId,
            B256::repeat_byte(1)
        );
        let before = c.balance(SETTLEMENT);
        ok(&c.send(&who.alice, I::claimCall {}.abi_encode(), U256::ZERO));
        assert_eq!(before - c.balance(SETTLEMENT), alice);
        let claimable = I::claimableCall {
            account: who.alice.address(),
        };
        assert!(read(&c, claimable.abi_encode()).is_zero());
        assert_eq!(earned(&c, who.alice.address()), alice, "history stays");
        reverted_with::<I::NothingToClaim>(&c.send(
            &who.alice,
            I::claimCall {}.abi_encode(),
            U256::ZERO,
        ));
    }

    #[test]
    fn a_record_without_attribution_pays_the_owner_and_the_treasury_the_rest() {
        let who = cast();
        let mut c = world(&who, &[]);
        let treasury_before = c.balance(TREASURY);
        let tx = c.send(
            &who.operator,
            settle(vec![usage(1, who.caller.address(), 1_000, &[])]),
            U256::ZERO,
        );
        ok(&tx);
        let owner = ONE_OPEN * U256::from(15u64) / U256::from(100u64);
        assert_eq!(earned(&c, who.owner.address()), owner);
        let base_fee = U256::from(tx.gas_used);
        assert_eq!(
            c.balance(TREASURY) - treasury_before - base_fee,
            ONE_OPEN - owner
        );
        assert!(earned(&c, who.alice.address()).is_zero());
    }

    #[test]
    fn the_split_is_read_from_protocol_params() {
        let who = cast();
        let mut c = world(
            &who,
            &[
                (SETTLEMENT_CONTRIBUTORS_BPS, 5_000),
                (SETTLEMENT_MODEL_OWNER_BPS, 3_500),
            ],
        );
        ok(&c.send(
            &who.operator,
            settle(vec![usage(
                1,
                who.caller.address(),
                1_000,
                &[(1, 1_000_000)],
            )]),
            U256::ZERO,
        ));
        assert_eq!(earned(&c, who.alice.address()), ONE_OPEN / U256::from(2u64));
        assert_eq!(
            earned(&c, who.owner.address()),
            ONE_OPEN * U256::from(35u64) / U256::from(100u64)
        );
    }

    /// The name of the custom error a failed call reverted with, among those settlement raises.
    fn error_name(output: &[u8]) -> Option<&'static str> {
        let known: [([u8; 4], &str); 8] = [
            (I::FeeMismatch::SELECTOR, "FeeMismatch"),
            (I::SharesNotWhole::SELECTOR, "SharesNotWhole"),
            (I::DuplicateShare::SELECTOR, "DuplicateShare"),
            (
                I::ContributionNotPayable::SELECTOR,
                "ContributionNotPayable",
            ),
            (I::EmptyBatch::SELECTOR, "EmptyBatch"),
            (I::UnknownModel::SELECTOR, "UnknownModel"),
            (
                IInference::InsufficientDeposit::SELECTOR,
                "InsufficientDeposit",
            ),
            (IInference::NotOperator::SELECTOR, "NotOperator"),
        ];
        let selector = output.get(..4)?;
        known.iter().find(|(s, _)| s == selector).map(|(_, n)| *n)
    }

    #[test]
    fn bad_batches_revert_whole_and_open_is_conserved() {
        let who = cast();
        let mut c = world(&who, &[]);
        let total = supply(&c);
        let caller = who.caller.address();
        let good = usage(1, caller, 1_000, &[(1, 500_000), (2, 500_000)]);
        let mut wrong_fee = usage(2, caller, 1_000, &[]);
        wrong_fee.fee += U256::from(1u64);
        let mut unknown_model = usage(10, caller, 1_000, &[]);
        unknown_model.modelId = 7;
        let cases: Vec<(Vec<I::Usage>, &str)> = vec![
            (vec![good.clone(), wrong_fee], "FeeMismatch"),
            (
                vec![usage(3, caller, 1_000, &[(1, 600_000)])],
                "SharesNotWhole",
            ),
            (
                vec![usage(4, caller, 1_000, &[(1, 500_000), (1, 500_000)])],
                "DuplicateShare",
            ),
            // A pending row, a row of a datanet the model was not trained on, no such row.
            (
                vec![usage(5, caller, 1_000, &[(3, 1_000_000)])],
                "ContributionNotPayable",
            ),
            (
                vec![usage(6, caller, 1_000, &[(4, 1_000_000)])],
                "ContributionNotPayable",
            ),
            (
                vec![usage(7, caller, 1_000, &[(99, 1_000_000)])],
                "ContributionNotPayable",
            ),
            // 100 OPEN from a 10 OPEN deposit; an account that never approved the operator.
            (vec![usage(8, caller, 100_000, &[])], "InsufficientDeposit"),
            (vec![usage(9, who.bob.address(), 1_000, &[])], "NotOperator"),
            (vec![unknown_model], "UnknownModel"),
            (vec![], "EmptyBatch"),
        ];
        for (batch, expected) in cases {
            let tx = c.send(&who.operator, settle(batch), U256::ZERO);
            assert!(!tx.success, "{expected}: the batch must revert");
            assert_eq!(error_name(&tx.output), Some(expected));
            assert!(earned(&c, who.owner.address()).is_zero(), "{expected}");
            assert_eq!(deposit_of(&c, caller), open(10), "{expected}");
            let settled = I::isSettledCall {
                requestId: good.requestId,
            };
            assert!(
                c.view(settled.abi_encode())[31] == 0,
                "{expected}: the good record of a failed batch is not settled"
            );
            assert_eq!(supply(&c), total, "{expected}: OPEN is conserved");
        }
        ok(&c.send(&who.operator, settle(vec![good]), U256::ZERO));
        assert_eq!(supply(&c), total);
        assert_eq!(deposit_of(&c, caller), open(9));
    }

    #[test]
    fn deposits_withdraw_after_the_delay_and_only_settlement_charges() {
        let who = cast();
        let mut c = world(&who, &[]);
        c.to = INFERENCE;
        let caller = who.caller.address();
        let charge = IInference::chargeCall {
            account: caller,
            operator: who.operator.address(),
            amount: open(1),
        };
        let direct = c.send(&who.operator, charge.abi_encode(), U256::ZERO);
        assert_eq!(
            reverted_with::<IInference::NotSettlement>(&direct).caller,
            who.operator.address()
        );
        let too_much = IInference::requestWithdrawCall { amount: open(11) };
        reverted_with::<IInference::InsufficientDeposit>(&c.send(
            &who.caller,
            too_much.abi_encode(),
            U256::ZERO,
        ));
        reverted_with::<IInference::NoWithdrawRequested>(&c.send(
            &who.caller,
            IInference::withdrawCall {}.abi_encode(),
            U256::ZERO,
        ));
        let request = IInference::requestWithdrawCall { amount: open(6) };
        ok(&c.send(&who.caller, request.abi_encode(), U256::ZERO));
        let early = c.send(
            &who.caller,
            IInference::withdrawCall {}.abi_encode(),
            U256::ZERO,
        );
        let release = reverted_with::<IInference::WithdrawNotReady>(&early).releaseBlock;
        assert_eq!(release, c.number + 100);

        // Usage served meanwhile is still charged: 5 OPEN of the 10.
        c.to = SETTLEMENT;
        ok(&c.send(
            &who.operator,
            settle(vec![usage(1, caller, 5_000, &[])]),
            U256::ZERO,
        ));
        c.to = INFERENCE;
        c.advance(100);
        let before = c.balance(INFERENCE);
        ok(&c.send(
            &who.caller,
            IInference::withdrawCall {}.abi_encode(),
            U256::ZERO,
        ));
        assert_eq!(before - c.balance(INFERENCE), open(5), "what was left");
        assert!(deposit_of(&c, caller).is_zero());

        // Revoking the operator stops further charges.
        ok(&c.send(
            &who.caller,
            IInference::depositCall {
                operator: Address::ZERO,
            }
            .abi_encode(),
            open(1),
        ));
        let revoke = IInference::setOperatorCall {
            operator: who.operator.address(),
            approved: false,
        };
        ok(&c.send(&who.caller, revoke.abi_encode(), U256::ZERO));
        c.to = SETTLEMENT;
        let tx = c.send(
            &who.operator,
            settle(vec![usage(2, caller, 1_000, &[])]),
            U256::ZERO,
        );
        assert_eq!(error_name(&tx.output), Some("NotOperator"));
    }
}
