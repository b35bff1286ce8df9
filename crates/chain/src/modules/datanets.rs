//! `Datanets`: community datasets on chain (precompile at [`DATANETS`]).
//!
//! The chain keeps the facts that payment and trust depend on — who owns a datanet, who
//! contributed which rows (by Merkle root of row hashes), which curators accepted them, the
//! immutable snapshots, and who may read a permissioned datanet. Rows themselves live off chain
//! in the data service, addressed by hash. Storage layout: see [`super::storage`]; ids count
//! from 1 so that 0 means "none".

use super::protocol_params::ProtocolParams;
use super::storage::{
    field, load_address, load_b256, load_string, load_u64, slot, store_address, store_b256,
    store_string, store_u64,
};
use super::{
    CallContext, Module, ModuleError, ModuleHost, decode, emit, encode_u256, non_payable, selector,
    unknown_selector,
};
use alloy_sol_types::{SolCall, SolValue};
use openledger_primitives::addresses::{DATANETS, GOVERNANCE, TREASURY};
use openledger_primitives::{Address, B256, Bytes, U256};

/// The generated bindings (some constructors take more arguments than clippy likes).
#[allow(clippy::too_many_arguments)]
mod abi {
    alloy_sol_types::sol!("solidity/IDatanets.sol");
}
pub use abi::IDatanets;
use abi::IDatanets as I;

pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_LICENSE_BYTES: usize = 64;
pub const MAX_CURATORS: usize = 64;
pub const CREATION_FEE_PARAM: &str = "datanet.creation_fee";

// Record fields.
const D_OWNER: u64 = 0;
const D_DESCRIPTION: u64 = 1;
const D_SCHEMA: u64 = 2;
const D_FLAGS: u64 = 3;
const D_QUORUM: u64 = 4;
const D_CURATORS: u64 = 5;
const D_NAME: u64 = 6;
const D_LICENSE: u64 = 7;
const FLAG_PERMISSIONED: u64 = 1;
const FLAG_ALLOWLIST: u64 = 2;
const FLAG_CLOSED: u64 = 4;

const C_DATANET: u64 = 0;
const C_CONTRIBUTOR: u64 = 1;
const C_ROOT: u64 = 2;
const C_ROWS: u64 = 3;
const C_BYTES: u64 = 4;
const C_STATUS: u64 = 5;
const C_APPROVALS: u64 = 6;
const C_REJECTIONS: u64 = 7;
pub const STATUS_PENDING: u8 = 0;
pub const STATUS_ACCEPTED: u8 = 1;
pub const STATUS_REJECTED: u8 = 2;
pub const STATUS_REMOVED: u8 = 3;

const S_DATANET: u64 = 0;
const S_ROOT: u64 = 1;
const S_ROWS: u64 = 2;
const S_PARENT: u64 = 3;
const S_BLOCK: u64 = 4;

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn datanet(id: u64) -> U256 {
    slot("datanet", &[&id_key(id)])
}

fn contribution(id: u64) -> U256 {
    slot("contribution", &[&id_key(id)])
}

fn snapshot(id: u64) -> U256 {
    slot("snapshot", &[&id_key(id)])
}

/// The root of published snapshot `id`, for other modules (`None` if there is no such
/// snapshot). Reads this module's storage through `sload_at`, so the caller pays for it.
pub fn snapshot_root(host: &mut dyn ModuleHost, id: u64) -> Result<Option<B256>, ModuleError> {
    let base = snapshot(id);
    if host.sload_at(DATANETS, field(base, S_DATANET))?.is_zero() {
        return Ok(None);
    }
    Ok(Some(B256::from(
        host.sload_at(DATANETS, field(base, S_ROOT))?,
    )))
}

/// The curators who accepted contribution `id`, at consecutive slots in review order.
fn approvers(id: u64) -> U256 {
    slot("approvers", &[&id_key(id)])
}

/// What settlement needs to pay for a contribution's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionPayees {
    pub datanet_id: u64,
    pub contributor: Address,
    pub accepted: bool,
    /// The curators whose approvals accepted it.
    pub curators: Vec<Address>,
}

/// The payees of contribution `id`, for other modules (`None` if there is no such
/// contribution). Reads through `sload_at`, so the caller pays for it.
pub fn contribution_payees(
    host: &mut dyn ModuleHost,
    id: u64,
) -> Result<Option<ContributionPayees>, ModuleError> {
    let base = contribution(id);
    let datanet_id: u64 = host
        .sload_at(DATANETS, field(base, C_DATANET))?
        .saturating_to();
    if datanet_id == 0 {
        return Ok(None);
    }
    let word = |w: U256| Address::from_word(B256::from(w));
    let contributor = word(host.sload_at(DATANETS, field(base, C_CONTRIBUTOR))?);
    let status: u64 = host
        .sload_at(DATANETS, field(base, C_STATUS))?
        .saturating_to();
    let approvals: u64 = host
        .sload_at(DATANETS, field(base, C_APPROVALS))?
        .saturating_to();
    let mut curators = Vec::with_capacity(approvals as usize);
    for i in 0..approvals {
        curators.push(word(host.sload_at(DATANETS, field(approvers(id), i))?));
    }
    Ok(Some(ContributionPayees {
        datanet_id,
        contributor,
        accepted: status == STATUS_ACCEPTED as u64,
        curators,
    }))
}

/// The datanet of published snapshot `id` (`None` if there is no such snapshot).
pub fn snapshot_datanet(host: &mut dyn ModuleHost, id: u64) -> Result<Option<u64>, ModuleError> {
    let datanet: u64 = host
        .sload_at(DATANETS, field(snapshot(id), S_DATANET))?
        .saturating_to();
    Ok((datanet != 0).then_some(datanet))
}

fn member(tag: &str, id: u64, who: Address) -> U256 {
    slot(tag, &[&id_key(id), who.as_slice()])
}

fn counter(tag: &str) -> U256 {
    slot(tag, &[])
}

/// Increments a counter and returns the new id.
fn next_id(host: &mut dyn ModuleHost, tag: &str) -> Result<u64, ModuleError> {
    let id = load_u64(host, counter(tag))? + 1;
    store_u64(host, counter(tag), id)?;
    Ok(id)
}

/// A datanet that exists, with the fields calls check most.
struct Datanet {
    id: u64,
    owner: Address,
    flags: u64,
    quorum: u64,
}

impl Datanet {
    fn load(host: &mut dyn ModuleHost, id: u64) -> Result<Self, ModuleError> {
        let base = datanet(id);
        let owner = load_address(host, field(base, D_OWNER))?;
        if owner.is_zero() {
            return Err(ModuleError::revert(I::UnknownDatanet { datanetId: id }));
        }
        let flags = load_u64(host, field(base, D_FLAGS))?;
        let quorum = load_u64(host, field(base, D_QUORUM))?;
        Ok(Self {
            id,
            owner,
            flags,
            quorum,
        })
    }

    fn only_owner(&self, caller: Address) -> Result<(), ModuleError> {
        if caller == self.owner {
            Ok(())
        } else {
            Err(ModuleError::revert(I::NotOwner { caller }))
        }
    }

    fn open(&self) -> Result<(), ModuleError> {
        if self.flags & FLAG_CLOSED == 0 {
            Ok(())
        } else {
            Err(ModuleError::revert(I::DatanetIsClosed {
                datanetId: self.id,
            }))
        }
    }

    fn is_curator(&self, host: &mut dyn ModuleHost, who: Address) -> Result<bool, ModuleError> {
        Ok(!host.sload(member("curator", self.id, who))?.is_zero())
    }

    fn set_curator(
        &self,
        host: &mut dyn ModuleHost,
        who: Address,
        enabled: bool,
    ) -> Result<(), ModuleError> {
        let was = self.is_curator(host, who)?;
        if was == enabled {
            return Ok(());
        }
        host.sstore(member("curator", self.id, who), U256::from(enabled as u8))?;
        let count_slot = field(datanet(self.id), D_CURATORS);
        let count = load_u64(host, count_slot)?;
        store_u64(
            host,
            count_slot,
            if enabled {
                count + 1
            } else {
                count.saturating_sub(1)
            },
        )?;
        emit(
            host,
            I::CuratorSet {
                datanetId: self.id,
                curator: who,
                enabled,
            },
        )
    }
}

fn invalid(what: &str) -> ModuleError {
    ModuleError::revert(I::InvalidArgument {
        what: what.to_string(),
    })
}

fn has_access(
    host: &mut dyn ModuleHost,
    d: &Datanet,
    who: Address,
    now: u64,
) -> Result<bool, ModuleError> {
    if d.flags & FLAG_PERMISSIONED == 0 || who == d.owner {
        return Ok(true);
    }
    Ok(load_u64(host, member("grant", d.id, who))? > now)
}

pub struct Datanets;

impl Module for Datanets {
    fn address(&self) -> Address {
        DATANETS
    }

    fn name(&self) -> &'static str {
        "Datanets"
    }

    fn call(
        &self,
        call: &CallContext<'_>,
        host: &mut dyn ModuleHost,
    ) -> Result<Bytes, ModuleError> {
        let selector = selector(call, self.name())?;
        if selector != I::createDatanetCall::SELECTOR {
            non_payable(call)?;
        }
        let input = call.input;
        let caller = call.caller;
        match selector {
            I::createDatanetCall::SELECTOR => {
                let a = decode::<I::createDatanetCall>(self.name(), input)?;
                if a.name.is_empty() || a.name.len() > MAX_NAME_BYTES {
                    return Err(invalid("name must be 1 to 128 bytes"));
                }
                if a.license.is_empty() || a.license.len() > MAX_LICENSE_BYTES {
                    return Err(invalid(
                        "license must be an SPDX identifier of 1 to 64 bytes",
                    ));
                }
                if a.schema > 2 {
                    return Err(invalid(
                        "schema must be 0 (text), 1 (instruction/response) or 2 (chat)",
                    ));
                }
                if a.curators.len() > MAX_CURATORS {
                    return Err(invalid("at most 64 curators"));
                }
                let mut curators: Vec<Address> = a.curators.clone();
                curators.sort();
                curators.dedup();
                if curators.iter().any(|c| c.is_zero()) {
                    return Err(invalid("a curator cannot be the zero address"));
                }
                if curators.is_empty() {
                    curators.push(caller);
                }
                if a.reviewQuorum == 0 || a.reviewQuorum as usize > curators.len() {
                    return Err(invalid(
                        "reviewQuorum must be between 1 and the number of curators",
                    ));
                }
                let fee = ProtocolParams::read_from(host, CREATION_FEE_PARAM)?;
                if call.value != fee {
                    return Err(ModuleError::revert(I::WrongFee {
                        paid: call.value,
                        required: fee,
                    }));
                }
                host.transfer(TREASURY, fee)?;
                let id = next_id(host, "datanets.count")?;
                let base = datanet(id);
                store_address(host, field(base, D_OWNER), caller)?;
                store_b256(host, field(base, D_DESCRIPTION), a.descriptionHash)?;
                store_u64(host, field(base, D_SCHEMA), a.schema as u64)?;
                let flags = if a.permissioned { FLAG_PERMISSIONED } else { 0 }
                    | if a.allowlistOnly { FLAG_ALLOWLIST } else { 0 };
                store_u64(host, field(base, D_FLAGS), flags)?;
                store_u64(host, field(base, D_QUORUM), a.reviewQuorum as u64)?;
                store_string(host, field(base, D_NAME), &a.name)?;
                store_string(host, field(base, D_LICENSE), &a.license)?;
                emit(
                    host,
                    I::DatanetCreated {
                        datanetId: id,
                        owner: caller,
                        name: a.name,
                        license: a.license,
                        schema: a.schema,
                        permissioned: a.permissioned,
                        allowlistOnly: a.allowlistOnly,
                        reviewQuorum: a.reviewQuorum,
                    },
                )?;
                let d = Datanet {
                    id,
                    owner: caller,
                    flags,
                    quorum: a.reviewQuorum as u64,
                };
                for c in curators {
                    d.set_curator(host, c, true)?;
                }
                Ok(id.abi_encode().into())
            }
            I::setCuratorCall::SELECTOR => {
                let a = decode::<I::setCuratorCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                if a.curator.is_zero() {
                    return Err(invalid("a curator cannot be the zero address"));
                }
                d.set_curator(host, a.curator, a.enabled)?;
                let count = load_u64(host, field(datanet(d.id), D_CURATORS))?;
                if count < d.quorum {
                    return Err(invalid(
                        "removing this curator would leave fewer curators than the review quorum",
                    ));
                }
                Ok(Bytes::new())
            }
            I::setContributorCall::SELECTOR => {
                let a = decode::<I::setContributorCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                host.sstore(
                    member("contributor", d.id, a.contributor),
                    U256::from(a.allowed as u8),
                )?;
                emit(
                    host,
                    I::ContributorSet {
                        datanetId: d.id,
                        contributor: a.contributor,
                        allowed: a.allowed,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::closeDatanetCall::SELECTOR => {
                let a = decode::<I::closeDatanetCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                d.open()?;
                store_u64(host, field(datanet(d.id), D_FLAGS), d.flags | FLAG_CLOSED)?;
                emit(host, I::DatanetClosed { datanetId: d.id })?;
                Ok(Bytes::new())
            }
            I::contributeCall::SELECTOR => {
                let a = decode::<I::contributeCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.open()?;
                if d.flags & FLAG_ALLOWLIST != 0
                    && caller != d.owner
                    && host.sload(member("contributor", d.id, caller))?.is_zero()
                {
                    return Err(ModuleError::revert(I::NotAllowedToContribute { caller }));
                }
                if a.contentRoot == B256::ZERO || a.rowCount == 0 {
                    return Err(invalid(
                        "a contribution needs a content root and at least one row",
                    ));
                }
                let id = next_id(host, "contributions.count")?;
                let base = contribution(id);
                store_u64(host, field(base, C_DATANET), d.id)?;
                store_address(host, field(base, C_CONTRIBUTOR), caller)?;
                store_b256(host, field(base, C_ROOT), a.contentRoot)?;
                store_u64(host, field(base, C_ROWS), a.rowCount)?;
                store_u64(host, field(base, C_BYTES), a.byteCount)?;
                emit(
                    host,
                    I::Contributed {
                        contributionId: id,
                        datanetId: d.id,
                        contributor: caller,
                        contentRoot: a.contentRoot,
                        rowCount: a.rowCount,
                        byteCount: a.byteCount,
                    },
                )?;
                Ok(id.abi_encode().into())
            }
            I::reviewCall::SELECTOR => {
                let a = decode::<I::reviewCall>(self.name(), input)?;
                let base = contribution(a.contributionId);
                let datanet_id = load_u64(host, field(base, C_DATANET))?;
                if datanet_id == 0 {
                    return Err(ModuleError::revert(I::UnknownContribution {
                        contributionId: a.contributionId,
                    }));
                }
                let d = Datanet::load(host, datanet_id)?;
                if !d.is_curator(host, caller)? {
                    return Err(ModuleError::revert(I::NotCurator { caller }));
                }
                if load_u64(host, field(base, C_STATUS))? != STATUS_PENDING as u64 {
                    return Err(ModuleError::revert(I::ContributionNotPending {
                        contributionId: a.contributionId,
                    }));
                }
                let vote = member("vote", a.contributionId, caller);
                if !host.sload(vote)?.is_zero() {
                    return Err(ModuleError::revert(I::AlreadyReviewed {
                        contributionId: a.contributionId,
                        curator: caller,
                    }));
                }
                host.sstore(
                    vote,
                    U256::from(if a.accept {
                        STATUS_ACCEPTED
                    } else {
                        STATUS_REJECTED
                    }),
                )?;
                let tally = field(base, if a.accept { C_APPROVALS } else { C_REJECTIONS });
                let votes = load_u64(host, tally)? + 1;
                store_u64(host, tally, votes)?;
                if a.accept {
                    // Settlement pays the curators who accepted a row; keep them in order.
                    store_address(host, field(approvers(a.contributionId), votes - 1), caller)?;
                }
                emit(
                    host,
                    I::Reviewed {
                        contributionId: a.contributionId,
                        curator: caller,
                        accept: a.accept,
                        reasonCode: a.reasonCode,
                    },
                )?;
                if votes >= d.quorum {
                    let status = if a.accept {
                        STATUS_ACCEPTED
                    } else {
                        STATUS_REJECTED
                    };
                    store_u64(host, field(base, C_STATUS), status as u64)?;
                    if a.accept {
                        emit(
                            host,
                            I::ContributionAccepted {
                                contributionId: a.contributionId,
                                datanetId: d.id,
                            },
                        )?;
                    } else {
                        emit(
                            host,
                            I::ContributionRejected {
                                contributionId: a.contributionId,
                                datanetId: d.id,
                            },
                        )?;
                    }
                }
                Ok(Bytes::new())
            }
            I::publishSnapshotCall::SELECTOR => {
                let a = decode::<I::publishSnapshotCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                if a.root == B256::ZERO {
                    return Err(invalid("a snapshot needs a Merkle root"));
                }
                if a.parentSnapshotId != 0 {
                    let parent_datanet =
                        load_u64(host, field(snapshot(a.parentSnapshotId), S_DATANET))?;
                    if parent_datanet != d.id {
                        return Err(ModuleError::revert(I::UnknownSnapshot {
                            snapshotId: a.parentSnapshotId,
                        }));
                    }
                }
                let id = next_id(host, "snapshots.count")?;
                let base = snapshot(id);
                store_u64(host, field(base, S_DATANET), d.id)?;
                store_b256(host, field(base, S_ROOT), a.root)?;
                store_u64(host, field(base, S_ROWS), a.rowCount)?;
                store_u64(host, field(base, S_PARENT), a.parentSnapshotId)?;
                store_u64(host, field(base, S_BLOCK), call.block_number)?;
                emit(
                    host,
                    I::SnapshotPublished {
                        snapshotId: id,
                        datanetId: d.id,
                        root: a.root,
                        rowCount: a.rowCount,
                        parentSnapshotId: a.parentSnapshotId,
                    },
                )?;
                Ok(id.abi_encode().into())
            }
            I::removeForFraudCall::SELECTOR => {
                if caller != GOVERNANCE {
                    return Err(ModuleError::revert(I::NotGovernance { caller }));
                }
                let a = decode::<I::removeForFraudCall>(self.name(), input)?;
                let payees = contribution_payees(host, a.contributionId)?.ok_or(
                    ModuleError::revert(I::UnknownContribution {
                        contributionId: a.contributionId,
                    }),
                )?;
                if !payees.accepted {
                    return Err(ModuleError::revert(I::ContributionNotAccepted {
                        contributionId: a.contributionId,
                    }));
                }
                let base = contribution(a.contributionId);
                store_u64(host, field(base, C_STATUS), STATUS_REMOVED as u64)?;
                emit(
                    host,
                    I::ContributionRemoved {
                        contributionId: a.contributionId,
                        datanetId: payees.datanet_id,
                    },
                )?;
                Ok(I::removeForFraudCall::abi_encode_returns(&payees.curators).into())
            }
            I::requestAccessCall::SELECTOR => {
                let a = decode::<I::requestAccessCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                if a.purpose.len() > 1024 {
                    return Err(invalid("purpose must be at most 1024 bytes"));
                }
                emit(
                    host,
                    I::AccessRequested {
                        datanetId: d.id,
                        requester: caller,
                        purpose: a.purpose,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::grantAccessCall::SELECTOR => {
                let a = decode::<I::grantAccessCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                if a.expiresAt <= call.block_timestamp {
                    return Err(invalid("expiresAt must be in the future"));
                }
                store_u64(host, member("grant", d.id, a.grantee), a.expiresAt)?;
                emit(
                    host,
                    I::AccessGranted {
                        datanetId: d.id,
                        grantee: a.grantee,
                        expiresAt: a.expiresAt,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::revokeAccessCall::SELECTOR => {
                let a = decode::<I::revokeAccessCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                d.only_owner(caller)?;
                store_u64(host, member("grant", d.id, a.grantee), 0)?;
                emit(
                    host,
                    I::AccessRevoked {
                        datanetId: d.id,
                        grantee: a.grantee,
                    },
                )?;
                Ok(Bytes::new())
            }
            I::hasAccessCall::SELECTOR => {
                let a = decode::<I::hasAccessCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                Ok(has_access(host, &d, a.who, call.block_timestamp)?
                    .abi_encode()
                    .into())
            }
            I::isCuratorCall::SELECTOR => {
                let a = decode::<I::isCuratorCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                Ok(d.is_curator(host, a.who)?.abi_encode().into())
            }
            I::reviewedByCall::SELECTOR => {
                let a = decode::<I::reviewedByCall>(self.name(), input)?;
                let verdict: u8 = host
                    .sload(member("vote", a.contributionId, a.curator))?
                    .saturating_to();
                Ok(encode_u256(U256::from(verdict)))
            }
            I::datanetCountCall::SELECTOR => Ok(encode_u256(U256::from(load_u64(
                host,
                counter("datanets.count"),
            )?))),
            I::contributionCountCall::SELECTOR => Ok(encode_u256(U256::from(load_u64(
                host,
                counter("contributions.count"),
            )?))),
            I::snapshotCountCall::SELECTOR => Ok(encode_u256(U256::from(load_u64(
                host,
                counter("snapshots.count"),
            )?))),
            I::getDatanetCall::SELECTOR => {
                let a = decode::<I::getDatanetCall>(self.name(), input)?;
                let d = Datanet::load(host, a.datanetId)?;
                let base = datanet(d.id);
                let out = I::getDatanetReturn {
                    owner: d.owner,
                    name: load_string(host, field(base, D_NAME))?,
                    descriptionHash: load_b256(host, field(base, D_DESCRIPTION))?,
                    license: load_string(host, field(base, D_LICENSE))?,
                    schema: load_u64(host, field(base, D_SCHEMA))? as u8,
                    permissioned: d.flags & FLAG_PERMISSIONED != 0,
                    allowlistOnly: d.flags & FLAG_ALLOWLIST != 0,
                    reviewQuorum: d.quorum as u16,
                    curatorCount: load_u64(host, field(base, D_CURATORS))? as u32,
                    closed: d.flags & FLAG_CLOSED != 0,
                };
                Ok(I::getDatanetCall::abi_encode_returns(&out).into())
            }
            I::getContributionCall::SELECTOR => {
                let a = decode::<I::getContributionCall>(self.name(), input)?;
                let base = contribution(a.contributionId);
                let datanet_id = load_u64(host, field(base, C_DATANET))?;
                if datanet_id == 0 {
                    return Err(ModuleError::revert(I::UnknownContribution {
                        contributionId: a.contributionId,
                    }));
                }
                let out = I::getContributionReturn {
                    datanetId: datanet_id,
                    contributor: load_address(host, field(base, C_CONTRIBUTOR))?,
                    contentRoot: load_b256(host, field(base, C_ROOT))?,
                    rowCount: load_u64(host, field(base, C_ROWS))?,
                    byteCount: load_u64(host, field(base, C_BYTES))?,
                    status: load_u64(host, field(base, C_STATUS))? as u8,
                    approvals: load_u64(host, field(base, C_APPROVALS))? as u16,
                    rejections: load_u64(host, field(base, C_REJECTIONS))? as u16,
                };
                Ok(I::getContributionCall::abi_encode_returns(&out).into())
            }
            I::getSnapshotCall::SELECTOR => {
                let a = decode::<I::getSnapshotCall>(self.name(), input)?;
                let base = snapshot(a.snapshotId);
                let datanet_id = load_u64(host, field(base, S_DATANET))?;
                if datanet_id == 0 {
                    return Err(ModuleError::revert(I::UnknownSnapshot {
                        snapshotId: a.snapshotId,
                    }));
                }
                let out = I::getSnapshotReturn {
                    datanetId: datanet_id,
                    root: load_b256(host, field(base, S_ROOT))?,
                    rowCount: load_u64(host, field(base, S_ROWS))?,
                    parentSnapshotId: load_u64(host, field(base, S_PARENT))?,
                    blockNumber: load_u64(host, field(base, S_BLOCK))?,
                };
                Ok(I::getSnapshotCall::abi_encode_returns(&out).into())
            }
            _ => Err(unknown_selector(self.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::ExecutedTx;
    use crate::state::StateView;
    use crate::test_utils::key;
    use alloy_signer_local::PrivateKeySigner;
    use openledger_primitives::units::ONE_OPEN;

    use super::super::test_chain::{Chain as TestChain, reverted_with};

    struct Chain(TestChain);

    impl std::ops::Deref for Chain {
        type Target = TestChain;
        fn deref(&self) -> &TestChain {
            &self.0
        }
    }

    impl std::ops::DerefMut for Chain {
        fn deref_mut(&mut self) -> &mut TestChain {
            &mut self.0
        }
    }

    impl Chain {
        fn new() -> Self {
            Chain(TestChain::new(DATANETS))
        }

        fn create(
            &mut self,
            owner: &PrivateKeySigner,
            permissioned: bool,
            allowlist: bool,
            quorum: u16,
            curators: Vec<Address>,
        ) -> ExecutedTx {
            let data = I::createDatanetCall {
                name: "legal-qa".into(),
                descriptionHash: B256::repeat_byte(1),
                license: "CC-BY-4.0".into(),
                schema: 1,
                permissioned,
                allowlistOnly: allowlist,
                reviewQuorum: quorum,
                curators,
            }
            .abi_encode();
            self.send(owner, data, ONE_OPEN * U256::from(10))
        }
    }

    #[test]
    fn create_contribute_review_and_snapshot_end_to_end() {
        let mut c = Chain::new();
        let (owner, alice, cur1, cur2) = (key(0), key(1), key(2), key(3));
        let treasury_before = c
            .state
            .account(TREASURY)
            .unwrap()
            .map(|a| a.balance)
            .unwrap_or_default();
        let created = c.create(
            &owner,
            false,
            false,
            2,
            vec![cur1.address(), cur2.address()],
        );
        assert!(created.success, "{:?}", created.output);
        assert_eq!(U256::from_be_slice(&created.output), U256::from(1));
        let treasury = c.state.account(TREASURY).unwrap().unwrap().balance;
        assert!(
            treasury >= treasury_before + ONE_OPEN * U256::from(10),
            "the creation fee goes to the treasury"
        );
        assert_eq!(
            c.state.account(DATANETS).unwrap().unwrap().balance,
            U256::ZERO
        );

        let got = I::getDatanetCall::abi_decode_returns(
            &c.view(I::getDatanetCall { datanetId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(
            (
                got.owner,
                got.name.as_str(),
                got.license.as_str(),
                got.schema,
                got.reviewQuorum,
                got.curatorCount
            ),
            (owner.address(), "legal-qa", "CC-BY-4.0", 1, 2, 2)
        );

        let root = B256::repeat_byte(0xaa);
        let contributed = c.send(
            &alice,
            I::contributeCall {
                datanetId: 1,
                contentRoot: root,
                rowCount: 100,
                byteCount: 5_000,
            }
            .abi_encode(),
            U256::ZERO,
        );
        assert!(contributed.success);
        assert_eq!(contributed.logs.len(), 1);

        let review = |accept| {
            I::reviewCall {
                contributionId: 1,
                accept,
                reasonCode: 0,
            }
            .abi_encode()
        };
        reverted_with::<I::NotCurator>(&c.send(&alice, review(true), U256::ZERO));
        assert!(c.send(&cur1, review(true), U256::ZERO).success);
        reverted_with::<I::AlreadyReviewed>(&c.send(&cur1, review(true), U256::ZERO));
        let pending = I::getContributionCall::abi_decode_returns(
            &c.view(I::getContributionCall { contributionId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(
            (pending.status, pending.approvals),
            (STATUS_PENDING, 1),
            "one approval of a quorum of two"
        );
        let second = c.send(&cur2, review(true), U256::ZERO);
        assert!(second.success);
        assert_eq!(second.logs.len(), 2, "Reviewed and ContributionAccepted");
        let accepted = I::getContributionCall::abi_decode_returns(
            &c.view(I::getContributionCall { contributionId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(
            (
                accepted.contributor,
                accepted.contentRoot,
                accepted.rowCount,
                accepted.status
            ),
            (alice.address(), root, 100, STATUS_ACCEPTED)
        );
        let verdict = c.view(
            I::reviewedByCall {
                contributionId: 1,
                curator: cur2.address(),
            }
            .abi_encode(),
        );
        assert_eq!(
            U256::from_be_slice(&verdict),
            U256::from(STATUS_ACCEPTED),
            "who accepted is on record"
        );
        reverted_with::<I::ContributionNotPending>(&c.send(&cur1, review(false), U256::ZERO));

        let snap = I::publishSnapshotCall {
            datanetId: 1,
            root: B256::repeat_byte(0x5e),
            rowCount: 100,
            parentSnapshotId: 0,
        }
        .abi_encode();
        reverted_with::<I::NotOwner>(&c.send(&alice, snap.clone(), U256::ZERO));
        assert!(c.send(&owner, snap, U256::ZERO).success);
        let bad_parent = I::publishSnapshotCall {
            datanetId: 1,
            root: B256::repeat_byte(0x5f),
            rowCount: 1,
            parentSnapshotId: 9,
        }
        .abi_encode();
        reverted_with::<I::UnknownSnapshot>(&c.send(&owner, bad_parent, U256::ZERO));
        let s = I::getSnapshotCall::abi_decode_returns(
            &c.view(I::getSnapshotCall { snapshotId: 1 }.abi_encode()),
        )
        .unwrap();
        assert_eq!(
            (s.datanetId, s.root, s.rowCount, s.parentSnapshotId),
            (1, B256::repeat_byte(0x5e), 100, 0)
        );
        let count = |call: Vec<u8>| U256::from_be_slice(&c.view(call));
        assert_eq!(count(I::snapshotCountCall {}.abi_encode()), U256::from(1));
        assert!(count(I::contributionCountCall {}.abi_encode()) >= U256::from(1));
    }

    #[test]
    fn wrong_fees_bad_arguments_and_missing_datanets_are_refused() {
        let mut c = Chain::new();
        let owner = key(0);
        let mut data = I::createDatanetCall {
            name: "x".into(),
            descriptionHash: B256::ZERO,
            license: "MIT".into(),
            schema: 0,
            permissioned: false,
            allowlistOnly: false,
            reviewQuorum: 1,
            curators: vec![],
        };
        let paid_too_little = c.send(&owner, data.abi_encode(), ONE_OPEN);
        assert_eq!(
            reverted_with::<I::WrongFee>(&paid_too_little).required,
            ONE_OPEN * U256::from(10)
        );
        data.reviewQuorum = 2; // more than the one (implicit) curator
        reverted_with::<I::InvalidArgument>(&c.send(
            &owner,
            data.abi_encode(),
            ONE_OPEN * U256::from(10),
        ));
        data.reviewQuorum = 1;
        data.schema = 7;
        reverted_with::<I::InvalidArgument>(&c.send(
            &owner,
            data.abi_encode(),
            ONE_OPEN * U256::from(10),
        ));
        let missing = I::contributeCall {
            datanetId: 42,
            contentRoot: B256::repeat_byte(1),
            rowCount: 1,
            byteCount: 1,
        }
        .abi_encode();
        assert_eq!(
            reverted_with::<I::UnknownDatanet>(&c.send(&owner, missing, U256::ZERO)).datanetId,
            42
        );
        let paid_to_view = c.send(&owner, I::datanetCountCall {}.abi_encode(), U256::from(1));
        assert!(!paid_to_view.success, "only creation takes a payment");
        assert_eq!(
            U256::from_be_slice(&c.view(I::datanetCountCall {}.abi_encode())),
            U256::ZERO,
            "failed creations leave no datanet"
        );
        for count in [
            I::contributionCountCall {}.abi_encode(),
            I::snapshotCountCall {}.abi_encode(),
        ] {
            assert_eq!(U256::from_be_slice(&c.view(count)), U256::ZERO);
        }
    }

    #[test]
    fn allowlists_and_closing_gate_contributions() {
        let mut c = Chain::new();
        let (owner, alice, bob) = (key(0), key(1), key(2));
        assert!(c.create(&owner, false, true, 1, vec![]).success);
        let contribute = I::contributeCall {
            datanetId: 1,
            contentRoot: B256::repeat_byte(1),
            rowCount: 1,
            byteCount: 10,
        }
        .abi_encode();
        reverted_with::<I::NotAllowedToContribute>(&c.send(&alice, contribute.clone(), U256::ZERO));
        assert!(
            c.send(
                &owner,
                I::setContributorCall {
                    datanetId: 1,
                    contributor: alice.address(),
                    allowed: true
                }
                .abi_encode(),
                U256::ZERO
            )
            .success
        );
        assert!(c.send(&alice, contribute.clone(), U256::ZERO).success);
        reverted_with::<I::NotOwner>(&c.send(
            &bob,
            I::closeDatanetCall { datanetId: 1 }.abi_encode(),
            U256::ZERO,
        ));
        assert!(
            c.send(
                &owner,
                I::closeDatanetCall { datanetId: 1 }.abi_encode(),
                U256::ZERO
            )
            .success
        );
        reverted_with::<I::DatanetIsClosed>(&c.send(&alice, contribute, U256::ZERO));
    }

    #[test]
    fn permissioned_access_follows_grants_expiry_and_revocation() {
        let mut c = Chain::new();
        let (owner, reader) = (key(0), key(1));
        assert!(c.create(&owner, true, false, 1, vec![]).success);
        let has = |c: &Chain| {
            U256::from_be_slice(
                &c.view(
                    I::hasAccessCall {
                        datanetId: 1,
                        who: reader.address(),
                    }
                    .abi_encode(),
                ),
            ) == U256::from(1)
        };
        assert!(!has(&c));
        let requested = c.send(
            &reader,
            I::requestAccessCall {
                datanetId: 1,
                purpose: "fine-tune a legal assistant".into(),
            }
            .abi_encode(),
            U256::ZERO,
        );
        assert!(requested.success && requested.logs.len() == 1);
        reverted_with::<I::NotOwner>(
            &c.send(
                &reader,
                I::grantAccessCall {
                    datanetId: 1,
                    grantee: reader.address(),
                    expiresAt: 5_000,
                }
                .abi_encode(),
                U256::ZERO,
            ),
        );
        reverted_with::<I::InvalidArgument>(
            &c.send(
                &owner,
                I::grantAccessCall {
                    datanetId: 1,
                    grantee: reader.address(),
                    expiresAt: 10,
                }
                .abi_encode(),
                U256::ZERO,
            ),
        );
        assert!(
            c.send(
                &owner,
                I::grantAccessCall {
                    datanetId: 1,
                    grantee: reader.address(),
                    expiresAt: 5_000
                }
                .abi_encode(),
                U256::ZERO
            )
            .success
        );
        assert!(has(&c));
        c.timestamp = 5_000;
        assert!(!has(&c), "a grant ends at its expiry");
        c.timestamp = 1_000;
        assert!(
            c.send(
                &owner,
                I::revokeAccessCall {
                    datanetId: 1,
                    grantee: reader.address()
                }
                .abi_encode(),
                U256::ZERO
            )
            .success
        );
        assert!(!has(&c), "a revoked grant gives no access");
    }
}
