//! The serving engine: one thread owns the resident model and steps every active sequence
//! together. Each step is one `forward_batch` — new requests feed their whole prompt, running
//! ones their last token — so the base model's weights are read once per step for the whole
//! batch while each sequence keeps its own cache and adapter (continuous batching across
//! adapters). A request whose client has gone is dropped at the next step.
//!
//! KV memory is a fixed budget of blocks of [`KV_BLOCK`] positions (vLLM's paged KV, counted
//! here and matched by the caches, which grow by whole blocks):
//! - a request is admitted only when the blocks its prompt needs are free; among waiting
//!   requests the one whose tenant, then adapter, has the fewest running sequences goes first
//!   (oldest first among equals), so no tenant or adapter crowds out the others;
//! - before each step every running sequence gets the blocks its next positions need; when
//!   none are left, the most recently arrived running sequence is preempted: its blocks are
//!   freed and it goes back to the head of the queue with everything it has seen so far, to be
//!   recomputed when memory frees up (results are unchanged: a row's arithmetic never depends
//!   on its batch);
//! - finished, failed and abandoned sequences return their blocks at once.
//!
//! Invariant: the blocks held by running sequences plus the free blocks are always the whole
//! budget ([`Stats::kv_blocks_used`] is 0 when the engine is idle).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use openledger_llm::model::{KV_BLOCK, Step};
use openledger_llm::{Completion, Decoder, KvCache, LlmError, LoraAdapter, Model, SamplingParams};
use tokio::sync::mpsc::UnboundedSender;

/// What a request receives, in order: text pieces, then `Done` (or `Failed`).
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Completion),
    Failed(String),
}

pub struct Request {
    /// Who pays for it (an account), for fair admission; `None` for anonymous callers, who
    /// share one place in line.
    pub tenant: Option<String>,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub adapter: Option<Arc<LoraAdapter>>,
    pub events: UnboundedSender<Event>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Submitted, not yet seen by the engine.
    pub queued: AtomicUsize,
    /// Seen by the engine, waiting for a batch slot or KV memory (preempted ones included).
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub steps: AtomicU64,
    /// KV blocks in the budget, and held by running sequences.
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    /// Sequences preempted for memory (and recomputed later).
    pub preemptions: AtomicU64,
    /// From submission to the first generated token.
    pub time_to_first_token: crate::histogram::Histogram,
}

/// How the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences that decode together at most.
    pub max_batch: usize,
    /// Bytes of KV cache all sequences together may hold.
    pub kv_bytes: usize,
}

impl EngineConfig {
    /// `max_batch` sequences and 1 GiB of KV cache.
    pub fn new(max_batch: usize) -> Self {
        Self {
            max_batch,
            kv_bytes: 1 << 30,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    /// Requests with their decoder, built (and so checked) when submitted, and when.
    submit: mpsc::Sender<Submitted>,
    stats: Arc<Stats>,
    model: Arc<Model>,
}

type Submitted = (Request, Decoder, Instant);

struct Active {
    tenant: Option<String>,
    /// When it was submitted, until its first token is out.
    submitted: Option<Instant>,
    /// Arrival order: admission is oldest first, preemption newest first.
    arrival: u64,
    decoder: Decoder,
    cache: KvCache,
    /// Tokens already in `cache`.
    seen: Vec<u32>,
    /// KV blocks reserved for this sequence.
    blocks: usize,
    adapter: Option<Arc<LoraAdapter>>,
    /// Tokens to feed at the next step: the prompt, then one token at a time (after a
    /// preemption: everything seen so far, again).
    feed: Vec<u32>,
    events: UnboundedSender<Event>,
}

impl Active {
    /// Blocks this sequence holds once its next step has run.
    fn blocks_needed(&self) -> usize {
        (self.seen.len() + self.feed.len()).div_ceil(KV_BLOCK)
    }

    /// Gives back the cache (and so its memory); the sequence will recompute it.
    fn preempt(&mut self) {
        let mut feed = std::mem::take(&mut self.seen);
        feed.append(&mut self.feed);
        self.feed = feed;
        self.cache = KvCache::default();
        self.blocks = 0;
    }
}

impl Engine {
    /// Starts the engine thread; at most `max_batch` sequences decode together, with 1 GiB of
    /// KV cache.
    pub fn start(model: Arc<Model>, max_batch: usize) -> Self {
        Self::start_with(model, EngineConfig::new(max_batch))
    }

    pub fn start_with(model: Arc<Model>, config: EngineConfig) -> Self {
        let (submit, requests) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let block_bytes = model.llama.kv_bytes_per_position() * KV_BLOCK;
        let pool = BlockPool {
            total: (config.kv_bytes / block_bytes.max(1)).max(1),
            free: 0,
        };
        stats.kv_blocks_total.store(pool.total, Ordering::Relaxed);
        let worker = (model.clone(), stats.clone());
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("openlora-engine".into())
            .spawn(move || run(&worker.0, &worker.1, requests, max_batch, pool))
            .expect("spawn the engine thread");
        Self {
            submit,
            stats,
            model,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a request. Bad requests (empty or too long prompt, bad sampling parameters) are
    /// refused here, before they reach the batch.
    pub fn submit(&self, request: Request) -> Result<(), LlmError> {
        let decoder = Decoder::new(
            &request.prompt,
            &request.params,
            self.model.llama.config().context_length,
        )?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.submit
            .send((request, decoder, Instant::now()))
            .map_err(|_| LlmError::Compute("the serving engine has stopped".into()))
    }
}

/// The KV budget in blocks.
struct BlockPool {
    total: usize,
    free: usize,
}

fn run(
    model: &Model,
    stats: &Stats,
    requests: mpsc::Receiver<Submitted>,
    max_batch: usize,
    mut pool: BlockPool,
) {
    pool.free = pool.total;
    let mut arrivals = 0u64;
    let mut waiting: VecDeque<Active> = VecDeque::new();
    let mut active: Vec<Active> = Vec::new();
    let mut arrive = |queued, waiting: &mut VecDeque<Active>| {
        arrivals += 1;
        waiting.push_back(admit(queued, stats, arrivals));
    };
    loop {
        // Wait for work when idle; otherwise take whatever arrived.
        if active.is_empty() && waiting.is_empty() {
            match requests.recv() {
                Ok(queued) => arrive(queued, &mut waiting),
                Err(_) => return,
            }
        }
        while let Ok(queued) = requests.try_recv() {
            arrive(queued, &mut waiting);
        }
        // Clients that went away free their blocks before any compute.
        active.retain(|a| {
            let gone = a.events.is_closed();
            if gone {
                pool.free += a.blocks;
            }
            !gone
        });
        waiting.retain(|w| !w.events.is_closed());
        // Admit waiting sequences while their next step fits in free memory, fairest first.
        while active.len() < max_batch {
            let Some(index) = fairest(&waiting, &active) else {
                break;
            };
            let needed = waiting[index].blocks_needed();
            if needed > pool.total {
                let w = waiting.remove(index).expect("index in range");
                let _ = w.events.send(Event::Failed(format!(
                    "the request needs {needed} KV blocks of {KV_BLOCK} positions but the engine's whole KV budget is {} blocks; raise the KV memory or shorten the prompt",
                    pool.total
                )));
                continue;
            }
            if needed > pool.free {
                // Wait for memory rather than let smaller requests pass it forever.
                break;
            }
            let mut w = waiting.remove(index).expect("index in range");
            pool.free -= needed;
            w.blocks = needed;
            active.push(w);
        }
        // Every running sequence gets the blocks its next positions need, preempting the
        // newest arrivals when memory runs short.
        active.sort_by_key(|a| a.arrival);
        let mut i = 0;
        while i < active.len() {
            let extra = active[i].blocks_needed().saturating_sub(active[i].blocks);
            if extra <= pool.free {
                pool.free -= extra;
                active[i].blocks += extra;
                i += 1;
                continue;
            }
            let mut victim = active.pop().expect("non-empty");
            pool.free += victim.blocks;
            victim.preempt();
            stats.preemptions.fetch_add(1, Ordering::Relaxed);
            waiting.push_front(victim);
        }
        stats
            .kv_blocks_used
            .store(pool.total - pool.free, Ordering::Relaxed);
        stats.running.store(active.len(), Ordering::Relaxed);
        stats.waiting.store(waiting.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        let mut steps: Vec<Step> = active
            .iter_mut()
            .map(|a| Step {
                tokens: &a.feed,
                cache: &mut a.cache,
                adapter: a.adapter.as_deref(),
            })
            .collect();
        let logits = model.llama.forward_batch(&mut steps);
        drop(steps);
        stats.steps.fetch_add(1, Ordering::Relaxed);
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => {
                for a in active.drain(..) {
                    pool.free += a.blocks;
                    let _ = a.events.send(Event::Failed(e.to_string()));
                }
                continue;
            }
        };
        let mut finished = Vec::new();
        for (i, (a, mut logits)) in active.iter_mut().zip(logits).enumerate() {
            a.seen.append(&mut a.feed);
            match a.decoder.step(&model.tokenizer, &mut logits, a.cache.len()) {
                Ok(step) => {
                    if !step.text.is_empty() && a.events.send(Event::Text(step.text)).is_err() {
                        finished.push(i);
                        continue;
                    }
                    match step.next {
                        Some(token) => {
                            if let Some(at) = a.submitted.take() {
                                stats.time_to_first_token.observe(at.elapsed());
                            }
                            stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                            a.feed.push(token);
                        }
                        None => finished.push(i),
                    }
                }
                Err(e) => {
                    let _ = a.events.send(Event::Failed(e.to_string()));
                    finished.push(i);
                }
            }
        }
        for i in finished.into_iter().rev() {
            let a = active.swap_remove(i);
            pool.free += a.blocks;
            if a.decoder.is_finished() {
                let _ = a.events.send(Event::Done(a.decoder.into_completion()));
            }
        }
        debug_assert_eq!(
            pool.free + active.iter().map(|a| a.blocks).sum::<usize>(),
            pool.total,
            "KV blocks leaked"
        );
        stats
            .kv_blocks_used
            .store(pool.total - pool.free, Ordering::Relaxed);
        stats.running.store(active.len(), Ordering::Relaxed);
    }
}

/// The waiting sequence to admit next: the one whose tenant, then whose adapter, has the fewest
/// sequences running, oldest first among equals (preempted sequences keep their arrival, so
/// they come back before newer ones). One tenant's flood of requests, or one busy adapter,
/// cannot keep the others waiting.
fn fairest(waiting: &VecDeque<Active>, active: &[Active]) -> Option<usize> {
    let same_adapter = |a: &Option<Arc<LoraAdapter>>, b: &Option<Arc<LoraAdapter>>| match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    waiting
        .iter()
        .enumerate()
        .min_by_key(|(_, w)| {
            let tenant_running = active.iter().filter(|a| a.tenant == w.tenant).count();
            let adapter_running = active
                .iter()
                .filter(|a| same_adapter(&a.adapter, &w.adapter))
                .count();
            (tenant_running, adapter_running, w.arrival)
        })
        .map(|(i, _)| i)
}

fn admit((request, decoder, submitted): Submitted, stats: &Stats, arrival: u64) -> Active {
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    stats
        .prompt_tokens
        .fetch_add(request.prompt.len() as u64, Ordering::Relaxed);
    Active {
        tenant: request.tenant,
        submitted: Some(submitted),
        arrival,
        decoder,
        cache: KvCache::default(),
        seen: Vec::new(),
        blocks: 0,
        adapter: request.adapter,
        feed: request.prompt,
        events: request.events,
    }
}
