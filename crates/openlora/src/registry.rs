//! Adapters by name: where each one lives on disk (a PEFT directory), and a RAM cache of the
//! loaded ones with a byte budget, evicting the least recently used. Loading happens on the
//! caller's thread (the HTTP handler's blocking pool), never on the engine's, so a cold adapter
//! never stalls the sequences already decoding.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openledger_llm::config::LlamaConfig;
use openledger_llm::{Device, LlmError, LoraAdapter};

/// Where adapters come from: a function listing (name, PEFT directory) pairs, asked anew on
/// every miss so adapters that appear later (finished training jobs) are found.
pub type Source = Box<dyn Fn() -> Vec<(String, PathBuf)> + Send + Sync>;

struct Cached {
    adapter: Arc<LoraAdapter>,
    bytes: usize,
    last_used: u64,
    /// Pinned adapters are never evicted.
    pinned: bool,
}

/// One adapter as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdapterState {
    pub id: String,
    pub resident: bool,
    pub pinned: bool,
    pub bytes: usize,
}

/// What [`Registry::fetch`] found: the adapter, and when it was not resident (a miss), how
/// long reading it from disk took.
pub struct Fetched {
    pub adapter: Arc<LoraAdapter>,
    pub loaded_in: Option<Duration>,
}

pub struct Registry {
    sources: Vec<Source>,
    budget: usize,
    cache: Mutex<(BTreeMap<String, Cached>, u64)>,
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    /// How long adapter loads from disk took.
    pub load_latency: crate::histogram::Histogram,
}

fn adapter_bytes(adapter: &LoraAdapter) -> usize {
    adapter
        .layers
        .iter()
        .flatten()
        .flatten()
        .map(|p| (p.a_t.elem_count() + p.b_t.elem_count()) * 4)
        .sum()
}

impl Registry {
    /// A registry over `sources` keeping at most `budget` bytes of adapters in RAM.
    pub fn new(sources: Vec<Source>, budget: usize) -> Self {
        Self {
            sources,
            budget,
            cache: Mutex::new((BTreeMap::new(), 0)),
            hits: Default::default(),
            misses: Default::default(),
            load_latency: Default::default(),
        }
    }

    /// Every adapter name the sources know, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sources
            .iter()
            .flat_map(|s| s())
            .map(|(name, _)| name)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The adapter called `name`, from RAM or loaded from disk (`None`: no such adapter).
    pub fn get(
        &self,
        name: &str,
        model: &LlamaConfig,
    ) -> Result<Option<Arc<LoraAdapter>>, LlmError> {
        Ok(self.fetch(name, model)?.map(|f| f.adapter))
    }

    /// As [`Registry::get`], also saying whether this call loaded the adapter from disk and
    /// how long that took (what a cold request waits before it can join the batch).
    pub fn fetch(&self, name: &str, model: &LlamaConfig) -> Result<Option<Fetched>, LlmError> {
        use std::sync::atomic::Ordering::Relaxed;
        {
            let mut guard = self.cache.lock().expect("adapter cache lock");
            let (entries, clock) = &mut *guard;
            *clock += 1;
            let now = *clock;
            if let Some(entry) = entries.get_mut(name) {
                entry.last_used = now;
                self.hits.fetch_add(1, Relaxed);
                return Ok(Some(Fetched {
                    adapter: entry.adapter.clone(),
                    loaded_in: None,
                }));
            }
        }
        let Some(dir) = self
            .sources
            .iter()
            .flat_map(|s| s())
            .find(|(n, _)| n == name)
            .map(|(_, dir)| dir)
        else {
            return Ok(None);
        };
        self.misses.fetch_add(1, Relaxed);
        let started = Instant::now();
        let adapter = Arc::new(LoraAdapter::load_peft(&dir, model, &Device::Cpu)?);
        let loaded_in = started.elapsed();
        self.load_latency.observe(loaded_in);
        let bytes = adapter_bytes(&adapter);
        let mut guard = self.cache.lock().expect("adapter cache lock");
        let (entries, clock) = &mut *guard;
        let mut used: usize = entries.values().map(|e| e.bytes).sum();
        while used + bytes > self.budget {
            let Some(oldest) = entries
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone())
            else {
                break; // only pinned adapters left: go over budget rather than refuse
            };
            used -= entries.remove(&oldest).map_or(0, |e| e.bytes);
        }
        *clock += 1;
        entries.insert(
            name.to_string(),
            Cached {
                adapter: adapter.clone(),
                bytes,
                last_used: *clock,
                pinned: false,
            },
        );
        Ok(Some(Fetched {
            adapter,
            loaded_in: Some(loaded_in),
        }))
    }

    /// Loads `name` (if needed) and pins or unpins it; `false` when there is no such adapter.
    pub fn pin(&self, name: &str, model: &LlamaConfig, pinned: bool) -> Result<bool, LlmError> {
        if self.get(name, model)?.is_none() {
            return Ok(false);
        }
        let mut guard = self.cache.lock().expect("adapter cache lock");
        if let Some(entry) = guard.0.get_mut(name) {
            entry.pinned = pinned;
        }
        Ok(true)
    }

    /// Drops `name` from RAM (pinned or not); `false` when it was not resident.
    pub fn unload(&self, name: &str) -> bool {
        let mut guard = self.cache.lock().expect("adapter cache lock");
        guard.0.remove(name).is_some()
    }

    /// Every known adapter with its cache state.
    pub fn states(&self) -> Vec<AdapterState> {
        let guard = self.cache.lock().expect("adapter cache lock");
        self.names()
            .into_iter()
            .map(|id| {
                let entry = guard.0.get(&id);
                AdapterState {
                    resident: entry.is_some(),
                    pinned: entry.is_some_and(|e| e.pinned),
                    bytes: entry.map_or(0, |e| e.bytes),
                    id,
                }
            })
            .collect()
    }

    /// (resident adapters, bytes they take).
    pub fn resident(&self) -> (usize, usize) {
        let guard = self.cache.lock().expect("adapter cache lock");
        (guard.0.len(), guard.0.values().map(|e| e.bytes).sum())
    }
}
