//! Polling filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_getFilterChanges`, …): how
//! ethers, web3.js and viem follow events over plain HTTP.
//!
//! A filter remembers the next block it has not reported yet; each poll reports from there to
//! the head. Filters nobody polls for five minutes are dropped, as geth does.

use alloy_rpc_types_eth::Filter;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An idle filter is removed after this long.
pub const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
/// Most filters installed at once.
pub const MAX_FILTERS: usize = 10_000;

#[derive(Debug, Clone)]
pub enum FilterKind {
    Blocks,
    PendingTransactions,
    Logs(Box<Filter>),
}

#[derive(Debug)]
struct Installed {
    kind: FilterKind,
    next_block: u64,
    polled: Instant,
}

#[derive(Debug, Default)]
pub struct Filters {
    installed: Mutex<HashMap<u64, Installed>>,
    counter: AtomicU64,
}

impl Filters {
    /// Installs a filter that reports from `next_block` on; returns its id, or `None` when too
    /// many filters are installed.
    pub fn install(&self, kind: FilterKind, next_block: u64) -> Option<String> {
        let mut installed = self.installed.lock().expect("filters lock");
        installed.retain(|_, f| f.polled.elapsed() < FILTER_TIMEOUT);
        if installed.len() >= MAX_FILTERS {
            return None;
        }
        let id = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        installed.insert(
            id,
            Installed {
                kind,
                next_block,
                polled: Instant::now(),
            },
        );
        Some(format!("{id:#x}"))
    }

    pub fn uninstall(&self, id: &str) -> bool {
        parse_id(id).is_some_and(|id| {
            self.installed
                .lock()
                .expect("filters lock")
                .remove(&id)
                .is_some()
        })
    }

    /// The filter and the first block it has not reported, advancing it past `head`.
    pub fn poll(&self, id: &str, head: u64) -> Option<(FilterKind, u64)> {
        let id = parse_id(id)?;
        let mut installed = self.installed.lock().expect("filters lock");
        let f = installed.get_mut(&id)?;
        if f.polled.elapsed() >= FILTER_TIMEOUT {
            installed.remove(&id);
            return None;
        }
        let from = f.next_block;
        f.next_block = f.next_block.max(head + 1);
        f.polled = Instant::now();
        Some((f.kind.clone(), from))
    }

    /// The filter without advancing it (`eth_getFilterLogs`).
    pub fn get(&self, id: &str) -> Option<FilterKind> {
        let id = parse_id(id)?;
        self.installed
            .lock()
            .expect("filters lock")
            .get(&id)
            .map(|f| f.kind.clone())
    }
}

fn parse_id(id: &str) -> Option<u64> {
    u64::from_str_radix(id.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_reports_each_block_once() {
        let filters = Filters::default();
        let id = filters.install(FilterKind::Blocks, 5).unwrap();
        assert_eq!(filters.poll(&id, 7).map(|(_, from)| from), Some(5));
        assert_eq!(filters.poll(&id, 7).map(|(_, from)| from), Some(8));
        assert_eq!(filters.poll(&id, 9).map(|(_, from)| from), Some(8));
        assert!(filters.uninstall(&id));
        assert!(filters.poll(&id, 9).is_none());
        assert!(!filters.uninstall("0xnot-hex"));
    }
}
