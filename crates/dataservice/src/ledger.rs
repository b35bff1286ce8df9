//! What the data service needs to know from the chain, behind one trait.
//!
//! The chain is the source of truth for who owns a datanet, which contributions were accepted
//! and which snapshots were published; the service only stores bytes. [`RpcLedger`] reads the
//! `Datanets` precompile over JSON-RPC (`eth_call` at the latest block), so the service works
//! the same inside `openledger up` and beside a remote node.

use alloy_sol_types::{SolCall, SolInterface};
use openledger_chain::modules::datanets::{IDatanets, STATUS_ACCEPTED};
use openledger_datanet::row::Schema;
use openledger_primitives::addresses::DATANETS;
use openledger_primitives::{Address, B256};
use openledger_wallet::RpcClient;
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatanetInfo {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    pub description_hash: B256,
    pub license: String,
    pub schema: Schema,
    pub permissioned: bool,
    pub allowlist_only: bool,
    pub review_quorum: u16,
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContributionInfo {
    pub id: u64,
    pub datanet_id: u64,
    pub contributor: Address,
    pub content_root: B256,
    pub row_count: u64,
    pub byte_count: u64,
    /// 0 pending, 1 accepted, 2 rejected.
    pub status: u8,
}

impl ContributionInfo {
    pub fn accepted(&self) -> bool {
        self.status == STATUS_ACCEPTED
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub id: u64,
    pub datanet_id: u64,
    pub root: B256,
    pub row_count: u64,
    pub parent_id: u64,
    pub block_number: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("chain unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected answer from the Datanets precompile to {call}: {reason}")]
    Decode { call: &'static str, reason: String },
}

/// Read access to the on-chain datanet records.
pub trait Ledger: Send + Sync + 'static {
    fn datanet(&self, id: u64) -> Result<Option<DatanetInfo>, LedgerError>;
    fn contribution(&self, id: u64) -> Result<Option<ContributionInfo>, LedgerError>;
    /// Every contribution to `datanet_id`, in id order.
    fn contributions(&self, datanet_id: u64) -> Result<Vec<ContributionInfo>, LedgerError>;
    fn snapshot(&self, id: u64) -> Result<Option<SnapshotInfo>, LedgerError>;
    /// The latest snapshot of a datanet, if any.
    fn latest_snapshot(&self, datanet_id: u64) -> Result<Option<SnapshotInfo>, LedgerError>;
    /// Whether `who` may read a datanet's rows: anyone for a public datanet; the owner,
    /// curators and holders of an unexpired grant for a permissioned one.
    fn may_read(&self, datanet_id: u64, who: Address) -> Result<bool, LedgerError>;
}

/// [`Ledger`] over a node's JSON-RPC.
#[derive(Debug, Clone)]
pub struct RpcLedger {
    client: RpcClient,
}

/// How a call to the precompile ended.
enum Reply<T> {
    Value(T),
    /// The precompile reverted with `UnknownDatanet`/`UnknownContribution`/`UnknownSnapshot`.
    Unknown,
}

impl RpcLedger {
    pub fn new(client: RpcClient) -> Self {
        Self { client }
    }

    fn call<C: SolCall>(&self, call: C) -> Result<Reply<C::Return>, LedgerError> {
        let data = format!("0x{}", hex::encode(call.abi_encode()));
        let result = self.client.call::<String>(
            "eth_call",
            json!([{ "to": DATANETS, "data": data }, "latest"]),
        );
        let output = match result {
            Ok(hex_out) => {
                hex::decode(hex_out.trim_start_matches("0x")).map_err(|e| LedgerError::Decode {
                    call: C::SIGNATURE,
                    reason: e.to_string(),
                })?
            }
            Err(openledger_wallet::RpcError::JsonRpc { data, message, .. }) => {
                let revert = data
                    .as_deref()
                    .and_then(|d| d.as_str())
                    .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok());
                if let Some(revert) = revert
                    && let Ok(error) = IDatanets::IDatanetsErrors::abi_decode(&revert)
                {
                    use IDatanets::IDatanetsErrors as E;
                    if matches!(
                        error,
                        E::UnknownDatanet(_) | E::UnknownContribution(_) | E::UnknownSnapshot(_)
                    ) {
                        return Ok(Reply::Unknown);
                    }
                }
                return Err(LedgerError::Decode {
                    call: C::SIGNATURE,
                    reason: message,
                });
            }
            Err(e) => return Err(LedgerError::Unavailable(e.to_string())),
        };
        C::abi_decode_returns(&output)
            .map(Reply::Value)
            .map_err(|e| LedgerError::Decode {
                call: C::SIGNATURE,
                reason: e.to_string(),
            })
    }

    fn count<C: SolCall<Return = u64>>(&self, call: C) -> Result<u64, LedgerError> {
        match self.call(call)? {
            Reply::Value(n) => Ok(n),
            Reply::Unknown => Ok(0),
        }
    }
}

impl Ledger for RpcLedger {
    fn datanet(&self, id: u64) -> Result<Option<DatanetInfo>, LedgerError> {
        let Reply::Value(d) = self.call(IDatanets::getDatanetCall { datanetId: id })? else {
            return Ok(None);
        };
        let schema = Schema::from_code(d.schema).ok_or(LedgerError::Decode {
            call: "getDatanet",
            reason: format!("unknown schema code {}", d.schema),
        })?;
        Ok(Some(DatanetInfo {
            id,
            owner: d.owner,
            name: d.name,
            description_hash: d.descriptionHash,
            license: d.license,
            schema,
            permissioned: d.permissioned,
            allowlist_only: d.allowlistOnly,
            review_quorum: d.reviewQuorum,
            closed: d.closed,
        }))
    }

    fn contribution(&self, id: u64) -> Result<Option<ContributionInfo>, LedgerError> {
        let Reply::Value(c) = self.call(IDatanets::getContributionCall { contributionId: id })?
        else {
            return Ok(None);
        };
        Ok(Some(ContributionInfo {
            id,
            datanet_id: c.datanetId,
            contributor: c.contributor,
            content_root: c.contentRoot,
            row_count: c.rowCount,
            byte_count: c.byteCount,
            status: c.status,
        }))
    }

    fn contributions(&self, datanet_id: u64) -> Result<Vec<ContributionInfo>, LedgerError> {
        let count = self.count(IDatanets::contributionCountCall {})?;
        let mut out = Vec::new();
        for id in 1..=count {
            if let Some(c) = self.contribution(id)?
                && c.datanet_id == datanet_id
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn snapshot(&self, id: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        let Reply::Value(s) = self.call(IDatanets::getSnapshotCall { snapshotId: id })? else {
            return Ok(None);
        };
        Ok(Some(SnapshotInfo {
            id,
            datanet_id: s.datanetId,
            root: s.root,
            row_count: s.rowCount,
            parent_id: s.parentSnapshotId,
            block_number: s.blockNumber,
        }))
    }

    fn latest_snapshot(&self, datanet_id: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        let count = self.count(IDatanets::snapshotCountCall {})?;
        for id in (1..=count).rev() {
            if let Some(s) = self.snapshot(id)?
                && s.datanet_id == datanet_id
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn may_read(&self, datanet_id: u64, who: Address) -> Result<bool, LedgerError> {
        let has_access = |call| match self.call(call)? {
            Reply::Value(yes) => Ok(yes),
            Reply::Unknown => Ok(false),
        };
        if has_access(IDatanets::hasAccessCall {
            datanetId: datanet_id,
            who,
        })? {
            return Ok(true);
        }
        match self.call(IDatanets::isCuratorCall {
            datanetId: datanet_id,
            who,
        })? {
            Reply::Value(yes) => Ok(yes),
            Reply::Unknown => Ok(false),
        }
    }
}
