//! What the factory needs from the rest of the node, as traits: the rows of a published
//! snapshot, who may read a datanet, and a content-addressed store for what training makes.
//! The node wires them to the data service; tests use memory.

use alloy_primitives::{Address, B256};
use openledger_dataservice::service::CreditedRow;
use openledger_dataservice::{DataService, ServiceError};

use crate::FactoryError;

/// A published snapshot, as the chain records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub id: u64,
    pub datanet_id: u64,
    pub root: B256,
    pub permissioned: bool,
}

pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self, id: u64) -> Result<SnapshotMeta, FactoryError>;
    /// Every row of the snapshot with its credit, in the snapshot's order.
    fn rows(&self, id: u64) -> Result<Vec<CreditedRow>, FactoryError>;
    /// Whether `who` may read the datanet's rows now (owner, curator or unexpired grant).
    fn may_read(&self, datanet_id: u64, who: Address) -> Result<bool, FactoryError>;
}

/// Content-addressed bytes (BLAKE3).
pub trait ArtifactStore: Send + Sync + 'static {
    fn put(&self, bytes: Vec<u8>) -> Result<B256, FactoryError>;
    fn get(&self, hash: &B256) -> Result<Vec<u8>, FactoryError>;
}

fn data(e: ServiceError) -> FactoryError {
    FactoryError::Data(e.to_string())
}

impl SnapshotSource for DataService {
    fn snapshot(&self, id: u64) -> Result<SnapshotMeta, FactoryError> {
        let (info, _) = DataService::snapshot(self, id).map_err(|e| match e {
            ServiceError::UnknownSnapshot(_) => FactoryError::UnknownSnapshot(id),
            other => data(other),
        })?;
        let datanet = self.datanet(info.datanet_id).map_err(data)?;
        Ok(SnapshotMeta {
            id,
            datanet_id: info.datanet_id,
            root: info.root,
            permissioned: datanet.permissioned,
        })
    }

    fn rows(&self, id: u64) -> Result<Vec<CreditedRow>, FactoryError> {
        self.snapshot_rows(id, 0, usize::MAX).map_err(data)
    }

    fn may_read(&self, datanet_id: u64, who: Address) -> Result<bool, FactoryError> {
        DataService::may_read(self, datanet_id, Some(who)).map_err(data)
    }
}

impl ArtifactStore for DataService {
    fn put(&self, bytes: Vec<u8>) -> Result<B256, FactoryError> {
        self.put_blob(bytes).map_err(data)
    }

    fn get(&self, hash: &B256) -> Result<Vec<u8>, FactoryError> {
        self.blob(hash).map(|b| b.to_vec()).map_err(data)
    }
}
