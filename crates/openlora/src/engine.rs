//! The serving engine: one thread owns the resident model and steps every active sequence
//! together. Each step is one `forward_batch` — new requests feed their whole prompt, running
//! ones their last token — so the base model's weights are read once per step for the whole
//! batch while each sequence keeps its own cache and adapter (continuous batching across
//! adapters). A request whose client has gone is dropped at the next step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use openledger_llm::model::Step;
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
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub adapter: Option<Arc<LoraAdapter>>,
    pub events: UnboundedSender<Event>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub steps: AtomicU64,
}

#[derive(Clone)]
pub struct Engine {
    /// Requests with their decoder, built (and so checked) when submitted.
    submit: mpsc::Sender<(Request, Decoder)>,
    stats: Arc<Stats>,
    model: Arc<Model>,
}

struct Active {
    decoder: Decoder,
    cache: KvCache,
    adapter: Option<Arc<LoraAdapter>>,
    /// Tokens to feed at the next step: the prompt, then one token at a time.
    feed: Vec<u32>,
    events: UnboundedSender<Event>,
}

impl Engine {
    /// Starts the engine thread; at most `max_batch` sequences decode together.
    pub fn start(model: Arc<Model>, max_batch: usize) -> Self {
        let (submit, requests) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let worker = (model.clone(), stats.clone());
        std::thread::Builder::new()
            .name("openlora-engine".into())
            .spawn(move || run(&worker.0, &worker.1, requests, max_batch.max(1)))
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
            .send((request, decoder))
            .map_err(|_| LlmError::Compute("the serving engine has stopped".into()))
    }
}

fn run(
    model: &Model,
    stats: &Stats,
    requests: mpsc::Receiver<(Request, Decoder)>,
    max_batch: usize,
) {
    let mut active: Vec<Active> = Vec::new();
    loop {
        // Wait for work when idle; otherwise take whatever arrived, up to the batch size.
        if active.is_empty() {
            match requests.recv() {
                Ok(queued) => active.push(admit(queued, stats)),
                Err(_) => return,
            }
        }
        while active.len() < max_batch {
            match requests.try_recv() {
                Ok(queued) => active.push(admit(queued, stats)),
                Err(_) => break,
            }
        }
        // Clients that went away free their slot before any compute.
        active.retain(|a| !a.events.is_closed());
        stats.running.store(active.len(), Ordering::Relaxed);
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
                    let _ = a.events.send(Event::Failed(e.to_string()));
                }
                continue;
            }
        };
        let mut finished = Vec::new();
        for (i, (a, mut logits)) in active.iter_mut().zip(logits).enumerate() {
            match a.decoder.step(&model.tokenizer, &mut logits, a.cache.len()) {
                Ok(step) => {
                    if !step.text.is_empty() && a.events.send(Event::Text(step.text)).is_err() {
                        finished.push(i);
                        continue;
                    }
                    match step.next {
                        Some(token) => {
                            stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                            a.feed.clear();
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
            if a.decoder.is_finished() {
                let _ = a.events.send(Event::Done(a.decoder.into_completion()));
            }
        }
        stats.running.store(active.len(), Ordering::Relaxed);
    }
}

fn admit((request, decoder): (Request, Decoder), stats: &Stats) -> Active {
    stats.queued.fetch_sub(1, Ordering::Relaxed);
    stats
        .prompt_tokens
        .fetch_add(request.prompt.len() as u64, Ordering::Relaxed);
    Active {
        decoder,
        cache: KvCache::default(),
        adapter: request.adapter,
        feed: request.prompt,
        events: request.events,
    }
}
