//! `Models`: base models and published fine-tunes (precompile at [`MODELS`]).
//!
//! A fine-tune's provenance is what attribution and payment rest on: which base weights (by
//! content hash), which adapter, which datanet snapshots (their roots are copied from the
//! `Datanets` module at publication, so a later reader needs nothing else), which
//! hyperparameters and evaluation, and the owner's price per 1,000 tokens. Ids count from 1.

use super::datanets::snapshot_root;
use super::storage::{
    field, load_address, load_b256, load_string, load_u64, slot, store_address, store_b256,
    store_string, store_u64,
};
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::addresses::MODELS;
use openledger_primitives::{Address, B256, Bytes, U256};

mod abi {
    alloy_sol_types::sol!("solidity/IModels.sol");
}
pub use abi::IModels;
use abi::IModels as I;

pub const MAX_NAME_BYTES: usize = 128;
/// Snapshots one fine-tune may cite.
pub const MAX_SNAPSHOTS: usize = 32;

// Base model record fields.
const B_REGISTRANT: u64 = 0;
const B_BLOCK: u64 = 1;
const B_NAME: u64 = 2;

// Model record fields.
const M_OWNER: u64 = 0;
const M_BASE: u64 = 1;
const M_ADAPTER: u64 = 2;
const M_MANIFEST: u64 = 3;
const M_HYPERPARAMS: u64 = 4;
const M_EVAL_LOSS: u64 = 5;
const M_EVAL_PPL: u64 = 6;
const M_PRICE: u64 = 7;
const M_RETIRED: u64 = 8;
const M_BLOCK: u64 = 9;
const M_SNAPSHOT_COUNT: u64 = 10;
const M_NAME: u64 = 11;
/// Snapshot `i` of a model: its id at `M_SNAPSHOTS + 2i`, its root at `M_SNAPSHOTS + 2i + 1`.
const M_SNAPSHOTS: u64 = 12;

fn base_model(hash: B256) -> U256 {
    slot("base_model", &[hash.as_slice()])
}

fn model(id: u64) -> U256 {
    slot("model", &[&id.to_be_bytes()])
}

fn by_adapter(hash: B256) -> U256 {
    slot("model_by_adapter", &[hash.as_slice()])
}

fn count_slot() -> U256 {
    slot("models.count", &[])
}

fn invalid(what: &str) -> ModuleError {
    ModuleError::revert(I::InvalidArgument {
        what: what.to_string(),
    })
}

/// A published model's owner, or `UnknownModel`.
fn owner_of(host: &mut dyn ModuleHost, id: u64) -> Result<Address, ModuleError> {
    let owner = load_address(host, field(model(id), M_OWNER))?;
    if owner.is_zero() {
        return Err(ModuleError::revert(I::UnknownModel { modelId: id }));
    }
    Ok(owner)
}

fn only_owner(host: &mut dyn ModuleHost, id: u64, caller: Address) -> Result<(), ModuleError> {
    if owner_of(host, id)? != caller {
        return Err(ModuleError::revert(I::NotModelOwner { caller }));
    }
    if load_u64(host, field(model(id), M_RETIRED))? != 0 {
        return Err(ModuleError::revert(I::ModelIsRetired { modelId: id }));
    }
    Ok(())
}

/// What settlement needs to charge for a published model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTerms {
    pub owner: Address,
    pub price_per_1k_tokens: U256,
    /// The datanet snapshots it was trained on.
    pub snapshot_ids: Vec<u64>,
}

/// The terms of published model `id`, for other modules (`None` if there is no such model).
/// A retired model still has terms: usage it served before retiring is still paid.
pub fn model_terms(host: &mut dyn ModuleHost, id: u64) -> Result<Option<ModelTerms>, ModuleError> {
    let m = model(id);
    let owner = Address::from_word(B256::from(host.sload_at(MODELS, field(m, M_OWNER))?));
    if owner.is_zero() {
        return Ok(None);
    }
    let price_per_1k_tokens = host.sload_at(MODELS, field(m, M_PRICE))?;
    let count: u64 = host
        .sload_at(MODELS, field(m, M_SNAPSHOT_COUNT))?
        .saturating_to();
    let mut snapshot_ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        snapshot_ids.push(
            host.sload_at(MODELS, field(m, M_SNAPSHOTS + 2 * i))?
                .saturating_to(),
        );
    }
    Ok(Some(ModelTerms {
        owner,
        price_per_1k_tokens,
        snapshot_ids,
    }))
}

pub struct Models;

impl Module for Models {
    fn address(&self) -> Address {
        MODELS
    }

    fn name(&self) -> &'static str {
        "Models"
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
            I::registerBaseModelCall::SELECTOR => {
                let a = decode::<I::registerBaseModelCall>(self.name(), input)?;
                if a.modelHash == B256::ZERO {
                    return Err(invalid("modelHash must be the content hash of the weights"));
                }
                if a.name.is_empty() || a.name.len() > MAX_NAME_BYTES {
                    return Err(invalid("name must be 1 to 128 bytes"));
                }
                let base = base_model(a.modelHash);
                if !load_address(host, field(base, B_REGISTRANT))?.is_zero() {
                    return Err(ModuleError::revert(I::BaseModelExists {
                        modelHash: a.modelHash,
                    }));
                }
                store_address(host, field(base, B_REGISTRANT), caller)?;
                store_u64(host, field(base, B_BLOCK), call.block_number)?;
                store_string(host, field(base, B_NAME), &a.name)?;
                emit(
                    host,
                    I::BaseModelRegistered {
                        modelHash: a.modelHash,
                        registrant: caller,
                        name: a.name,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::publishModelCall::SELECTOR => {
                let a = decode::<I::publishModelCall>(self.name(), input)?;
                if a.name.is_empty() || a.name.len() > MAX_NAME_BYTES {
                    return Err(invalid("name must be 1 to 128 bytes"));
                }
                if a.adapterHash == B256::ZERO || a.manifestHash == B256::ZERO {
                    return Err(invalid(
                        "adapterHash and manifestHash must be content hashes",
                    ));
                }
                if a.snapshotIds.is_empty() || a.snapshotIds.len() > MAX_SNAPSHOTS {
                    return Err(invalid("cite 1 to 32 datanet snapshots"));
                }
                if load_address(host, field(base_model(a.baseModelHash), B_REGISTRANT))?.is_zero() {
                    return Err(ModuleError::revert(I::UnknownBaseModel {
                        modelHash: a.baseModelHash,
                    }));
                }
                let existing = load_u64(host, by_adapter(a.adapterHash))?;
                if existing != 0 {
                    return Err(ModuleError::revert(I::AdapterAlreadyPublished {
                        adapterHash: a.adapterHash,
                        modelId: existing,
                    }));
                }
                let mut roots = Vec::with_capacity(a.snapshotIds.len());
                for &id in &a.snapshotIds {
                    let root = snapshot_root(host, id)?
                        .ok_or(ModuleError::revert(I::UnknownSnapshot { snapshotId: id }))?;
                    roots.push(root);
                }
                let id = load_u64(host, count_slot())? + 1;
                store_u64(host, count_slot(), id)?;
                let m = model(id);
                store_address(host, field(m, M_OWNER), caller)?;
                store_b256(host, field(m, M_BASE), a.baseModelHash)?;
                store_b256(host, field(m, M_ADAPTER), a.adapterHash)?;
                store_b256(host, field(m, M_MANIFEST), a.manifestHash)?;
                store_b256(host, field(m, M_HYPERPARAMS), a.hyperparamsHash)?;
                store_u64(host, field(m, M_EVAL_LOSS), a.evalLossMilli)?;
                store_u64(host, field(m, M_EVAL_PPL), a.evalPerplexityMilli)?;
                host.sstore(field(m, M_PRICE), a.pricePer1kTokens)?;
                store_u64(host, field(m, M_BLOCK), call.block_number)?;
                store_u64(host, field(m, M_SNAPSHOT_COUNT), roots.len() as u64)?;
                for (i, (&snapshot, root)) in a.snapshotIds.iter().zip(&roots).enumerate() {
                    store_u64(host, field(m, M_SNAPSHOTS + 2 * i as u64), snapshot)?;
                    store_b256(host, field(m, M_SNAPSHOTS + 2 * i as u64 + 1), *root)?;
                }
                // The name goes last: its slots hang off a hash of M_NAME's slot, not after it.
                store_string(host, field(m, M_NAME), &a.name)?;
                store_u64(host, by_adapter(a.adapterHash), id)?;
                emit(
                    host,
                    I::ModelPublished {
                        modelId: id,
                        owner: caller,
                        adapterHash: a.adapterHash,
                        baseModelHash: a.baseModelHash,
                        name: a.name,
                        pricePer1kTokens: a.pricePer1kTokens,
                    },
                )?;
                Ok(encode_u256(U256::from(id)))
            }
            I::setPriceCall::SELECTOR => {
                let a = decode::<I::setPriceCall>(self.name(), input)?;
                only_owner(host, a.modelId, caller)?;
                host.sstore(field(model(a.modelId), M_PRICE), a.pricePer1kTokens)?;
                emit(
                    host,
                    I::PriceChanged {
                        modelId: a.modelId,
                        pricePer1kTokens: a.pricePer1kTokens,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::retireModelCall::SELECTOR => {
                let a = decode::<I::retireModelCall>(self.name(), input)?;
                only_owner(host, a.modelId, caller)?;
                store_u64(host, field(model(a.modelId), M_RETIRED), 1)?;
                emit(host, I::ModelRetired { modelId: a.modelId })?;
                Ok(Bytes::new())
            }
            I::baseModelCall::SELECTOR => {
                let a = decode::<I::baseModelCall>(self.name(), input)?;
                let base = base_model(a.modelHash);
                let registrant = load_address(host, field(base, B_REGISTRANT))?;
                if registrant.is_zero() {
                    return Err(ModuleError::revert(I::UnknownBaseModel {
                        modelHash: a.modelHash,
                    }));
                }
                let out = I::baseModelReturn {
                    registrant,
                    name: load_string(host, field(base, B_NAME))?,
                    blockNumber: load_u64(host, field(base, B_BLOCK))?,
                };
                Ok(I::baseModelCall::abi_encode_returns(&out).into())
            }
            I::modelCountCall::SELECTOR => {
                Ok(encode_u256(U256::from(load_u64(host, count_slot())?)))
            }
            I::getModelCall::SELECTOR => {
                let a = decode::<I::getModelCall>(self.name(), input)?;
                let owner = owner_of(host, a.modelId)?;
                let m = model(a.modelId);
                let out = I::getModelReturn {
                    owner,
                    name: load_string(host, field(m, M_NAME))?,
                    baseModelHash: load_b256(host, field(m, M_BASE))?,
                    adapterHash: load_b256(host, field(m, M_ADAPTER))?,
                    manifestHash: load_b256(host, field(m, M_MANIFEST))?,
                    hyperparamsHash: load_b256(host, field(m, M_HYPERPARAMS))?,
                    evalLossMilli: load_u64(host, field(m, M_EVAL_LOSS))?,
                    evalPerplexityMilli: load_u64(host, field(m, M_EVAL_PPL))?,
                    pricePer1kTokens: host.sload(field(m, M_PRICE))?,
                    retired: load_u64(host, field(m, M_RETIRED))? != 0,
                    blockNumber: load_u64(host, field(m, M_BLOCK))?,
                };
                Ok(I::getModelCall::abi_encode_returns(&out).into())
            }
            I::modelSnapshotsCall::SELECTOR => {
                let a = decode::<I::modelSnapshotsCall>(self.name(), input)?;
                owner_of(host, a.modelId)?;
                let m = model(a.modelId);
                let n = load_u64(host, field(m, M_SNAPSHOT_COUNT))?;
                let mut ids = Vec::with_capacity(n as usize);
                let mut roots = Vec::with_capacity(n as usize);
                for i in 0..n {
                    ids.push(load_u64(host, field(m, M_SNAPSHOTS + 2 * i))?);
                    roots.push(load_b256(host, field(m, M_SNAPSHOTS + 2 * i + 1))?);
                }
                Ok((ids, roots).abi_encode_params().into())
            }
            I::modelByAdapterCall::SELECTOR => {
                let a = decode::<I::modelByAdapterCall>(self.name(), input)?;
                Ok(encode_u256(U256::from(load_u64(
                    host,
                    by_adapter(a.adapterHash),
                )?)))
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::datanets::IDatanets;
    use super::super::test_chain::{Chain, reverted_with};
    use super::*;
    use crate::test_utils::key;
    use alloy_signer_local::PrivateKeySigner;
    use openledger_primitives::addresses::DATANETS;
    use openledger_primitives::units::ONE_OPEN;

    const BASE: B256 = B256::repeat_byte(0xba);

    fn publish(adapter: u8, snapshots: Vec<u64>, base: B256) -> Vec<u8> {
        I::publishModelCall {
            name: "legal-qa-lora".into(),
            baseModelHash: base,
            adapterHash: B256::repeat_byte(adapter),
            manifestHash: B256::repeat_byte(0x3a),
            snapshotIds: snapshots,
            hyperparamsHash: B256::repeat_byte(0x4b),
            evalLossMilli: 1_234,
            evalPerplexityMilli: 3_435,
            pricePer1kTokens: ONE_OPEN / U256::from(100),
        }
        .abi_encode()
    }

    /// A chain with one datanet snapshot (id 1) published by `owner`.
    fn chain_with_snapshot(owner: &PrivateKeySigner) -> Chain {
        let mut c = Chain::new(DATANETS);
        let create = IDatanets::createDatanetCall {
            name: "legal".into(),
            descriptionHash: B256::repeat_byte(1),
            license: "CC-BY-4.0".into(),
            schema: 1,
            permissioned: false,
            allowlistOnly: false,
            reviewQuorum: 1,
            curators: vec![],
        };
        assert!(
            c.send(owner, create.abi_encode(), ONE_OPEN * U256::from(10))
                .success
        );
        let contribute = IDatanets::contributeCall {
            datanetId: 1,
            contentRoot: B256::repeat_byte(2),
            rowCount: 10,
            byteCount: 100,
        };
        assert!(c.send(owner, contribute.abi_encode(), U256::ZERO).success);
        let review = IDatanets::reviewCall {
            contributionId: 1,
            accept: true,
            reasonCode: 0,
        };
        assert!(c.send(owner, review.abi_encode(), U256::ZERO).success);
        let snapshot = IDatanets::publishSnapshotCall {
            datanetId: 1,
            root: B256::repeat_byte(0x5e),
            rowCount: 10,
            parentSnapshotId: 0,
        };
        assert!(c.send(owner, snapshot.abi_encode(), U256::ZERO).success);
        c.to = MODELS;
        c
    }

    #[test]
    fn publish_records_provenance_with_snapshot_roots() {
        let (owner, trainer) = (key(0), key(1));
        let mut c = chain_with_snapshot(&owner);
        let register = I::registerBaseModelCall {
            modelHash: BASE,
            name: "smollm2-135m-instruct".into(),
        };
        assert!(c.send(&owner, register.abi_encode(), U256::ZERO).success);
        let again = c.send(&trainer, register.abi_encode(), U256::ZERO);
        assert_eq!(reverted_with::<I::BaseModelExists>(&again).modelHash, BASE);

        let published = c.send(&trainer, publish(0xad, vec![1], BASE), U256::ZERO);
        assert!(published.success, "{:?}", published.output);
        assert_eq!(U256::from_be_slice(&published.output), U256::from(1));
        assert!(!published.logs.is_empty(), "ModelPublished is emitted");

        let m = I::getModelCall::abi_decode_returns(
            &c.view(I::getModelCall { modelId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(m.owner, trainer.address());
        assert_eq!(m.name, "legal-qa-lora");
        assert_eq!(m.baseModelHash, BASE);
        assert_eq!(m.adapterHash, B256::repeat_byte(0xad));
        assert_eq!((m.evalLossMilli, m.evalPerplexityMilli), (1_234, 3_435));
        assert_eq!(m.pricePer1kTokens, ONE_OPEN / U256::from(100));
        assert!(!m.retired);
        let snaps = I::modelSnapshotsCall::abi_decode_returns(
            &c.view(I::modelSnapshotsCall { modelId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(snaps.snapshotIds, vec![1]);
        assert_eq!(
            snaps.roots,
            vec![B256::repeat_byte(0x5e)],
            "the root is copied from Datanets"
        );
        let by_adapter = c.view(
            I::modelByAdapterCall {
                adapterHash: B256::repeat_byte(0xad),
            }
            .abi_encode(),
        );
        assert_eq!(U256::from_be_slice(&by_adapter), U256::from(1));
        let base = I::baseModelCall::abi_decode_returns(
            &c.view(I::baseModelCall { modelHash: BASE }.abi_encode()),
        )
        .unwrap();
        assert_eq!(base.name, "smollm2-135m-instruct");
    }

    #[test]
    fn bad_provenance_is_refused() {
        let (owner, trainer) = (key(0), key(1));
        let mut c = chain_with_snapshot(&owner);
        let unknown_base = c.send(&trainer, publish(0xad, vec![1], BASE), U256::ZERO);
        assert_eq!(
            reverted_with::<I::UnknownBaseModel>(&unknown_base).modelHash,
            BASE
        );
        let register = I::registerBaseModelCall {
            modelHash: BASE,
            name: "base".into(),
        };
        assert!(c.send(&owner, register.abi_encode(), U256::ZERO).success);
        let missing = c.send(&trainer, publish(0xad, vec![1, 7], BASE), U256::ZERO);
        assert_eq!(reverted_with::<I::UnknownSnapshot>(&missing).snapshotId, 7);
        let none = c.send(&trainer, publish(0xad, vec![], BASE), U256::ZERO);
        reverted_with::<I::InvalidArgument>(&none);
        assert!(
            c.send(&trainer, publish(0xad, vec![1], BASE), U256::ZERO)
                .success
        );
        let twice = c.send(&owner, publish(0xad, vec![1], BASE), U256::ZERO);
        assert_eq!(
            reverted_with::<I::AdapterAlreadyPublished>(&twice).modelId,
            1
        );
        let paid = c.send(&trainer, publish(0xae, vec![1], BASE), U256::from(1));
        assert!(!paid.success, "publishing takes no value");
        let count = c.view(I::modelCountCall {}.abi_encode());
        assert_eq!(U256::from_be_slice(&count), U256::from(1));
    }

    #[test]
    fn only_the_owner_prices_and_retires() {
        let (owner, trainer, stranger) = (key(0), key(1), key(2));
        let mut c = chain_with_snapshot(&owner);
        let register = I::registerBaseModelCall {
            modelHash: BASE,
            name: "base".into(),
        };
        assert!(c.send(&owner, register.abi_encode(), U256::ZERO).success);
        assert!(
            c.send(&trainer, publish(0xad, vec![1], BASE), U256::ZERO)
                .success
        );
        let price = |v: u64| {
            I::setPriceCall {
                modelId: 1,
                pricePer1kTokens: U256::from(v),
            }
            .abi_encode()
        };
        let refused = c.send(&stranger, price(5), U256::ZERO);
        assert_eq!(
            reverted_with::<I::NotModelOwner>(&refused).caller,
            stranger.address()
        );
        assert!(c.send(&trainer, price(5), U256::ZERO).success);
        let m = I::getModelCall::abi_decode_returns(
            &c.view(I::getModelCall { modelId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(m.pricePer1kTokens, U256::from(5));
        let retire = I::retireModelCall { modelId: 1 }.abi_encode();
        assert!(c.send(&trainer, retire.clone(), U256::ZERO).success);
        let after = c.send(&trainer, price(6), U256::ZERO);
        assert_eq!(reverted_with::<I::ModelIsRetired>(&after).modelId, 1);
        let unknown = c.send(
            &trainer,
            I::retireModelCall { modelId: 9 }.abi_encode(),
            U256::ZERO,
        );
        assert_eq!(reverted_with::<I::UnknownModel>(&unknown).modelId, 9);
    }
}
