//! An in-memory [`Ledger`]: the seam the node fills with the real chain.

use std::collections::HashMap;
use std::sync::Mutex;

use openledger_datanet::row::Schema;
use openledger_dataservice::ledger::{
    ContributionInfo, DatanetInfo, Ledger, LedgerError, SnapshotInfo,
};
use openledger_primitives::{Address, B256};

#[derive(Default)]
pub struct MemoryLedger {
    pub datanets: Mutex<HashMap<u64, DatanetInfo>>,
    pub contributions: Mutex<Vec<ContributionInfo>>,
    pub snapshots: Mutex<Vec<SnapshotInfo>>,
    pub readers: Mutex<Vec<(u64, Address)>>,
}

impl MemoryLedger {
    pub fn add_datanet(
        &self,
        id: u64,
        schema: Schema,
        permissioned: bool,
        description: B256,
    ) -> Address {
        let owner = Address::repeat_byte(0x0a);
        self.datanets.lock().unwrap().insert(
            id,
            DatanetInfo {
                id,
                owner,
                name: format!("datanet {id}"),
                description_hash: description,
                license: "CC-BY-4.0".into(),
                schema,
                permissioned,
                allowlist_only: false,
                review_quorum: 1,
                closed: false,
            },
        );
        owner
    }

    pub fn contribute(
        &self,
        datanet_id: u64,
        contributor: Address,
        root: B256,
        rows: u64,
        status: u8,
    ) -> u64 {
        let mut all = self.contributions.lock().unwrap();
        let id = all.len() as u64 + 1;
        all.push(ContributionInfo {
            id,
            datanet_id,
            contributor,
            content_root: root,
            row_count: rows,
            byte_count: 0,
            status,
        });
        id
    }

    pub fn publish(&self, datanet_id: u64, root: B256, rows: u64, parent: u64) -> u64 {
        let mut all = self.snapshots.lock().unwrap();
        let id = all.len() as u64 + 1;
        all.push(SnapshotInfo {
            id,
            datanet_id,
            root,
            row_count: rows,
            parent_id: parent,
            block_number: 7,
        });
        id
    }
}

impl Ledger for MemoryLedger {
    fn datanet(&self, id: u64) -> Result<Option<DatanetInfo>, LedgerError> {
        Ok(self.datanets.lock().unwrap().get(&id).cloned())
    }
    fn contribution(&self, id: u64) -> Result<Option<ContributionInfo>, LedgerError> {
        Ok(self
            .contributions
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.id == id)
            .cloned())
    }
    fn contributions(&self, datanet_id: u64) -> Result<Vec<ContributionInfo>, LedgerError> {
        Ok(self
            .contributions
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.datanet_id == datanet_id)
            .cloned()
            .collect())
    }
    fn snapshot(&self, id: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        Ok(self
            .snapshots
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id == id)
            .cloned())
    }
    fn latest_snapshot(&self, datanet_id: u64) -> Result<Option<SnapshotInfo>, LedgerError> {
        Ok(self
            .snapshots
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.datanet_id == datanet_id)
            .cloned())
    }
    fn may_read(&self, datanet_id: u64, who: Address) -> Result<bool, LedgerError> {
        let owner = self
            .datanets
            .lock()
            .unwrap()
            .get(&datanet_id)
            .map(|d| d.owner);
        Ok(owner == Some(who) || self.readers.lock().unwrap().contains(&(datanet_id, who)))
    }
}
