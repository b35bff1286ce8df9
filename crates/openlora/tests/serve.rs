//! OpenLoRA on the tiny llama: sequences with different adapters batched together answer
//! exactly as each does alone, and the OpenAI-compatible API serves the base model and the
//! adapters (whole and streamed), with OpenAI-shaped errors for bad requests.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Tensor;
use openledger_llm::testing::{TinyConfig, tiny_model};
use openledger_llm::{
    ChatMessage, LoraAdapter, LoraConfig, Model, SamplingParams, Target, generate_with,
};
use openlora::metering::{Admission, Meter, MeterError, Usage};
use openlora::{Engine, EngineConfig, Event, Registry, Request, Serving};

/// A PEFT directory holding an adapter with random (non-zero) B.
fn adapter_dir(
    model: &Model,
    dir: &std::path::Path,
    name: &str,
    rank: usize,
    targets: &[Target],
    seed: u64,
) -> PathBuf {
    let mut adapter = LoraAdapter::init(
        LoraConfig::new(rank, 2.0 * rank as f64, targets),
        model.llama.config(),
        seed,
        &openledger_llm::Device::Cpu,
    )
    .unwrap();
    let mut x = seed as f32;
    for pair in adapter.layers.iter_mut().flatten().flatten() {
        let (r, out) = pair.b_t.dims2().unwrap();
        let values: Vec<f32> = (0..r * out)
            .map(|i| {
                x += 0.37;
                ((x + i as f32).sin()) * 0.3
            })
            .collect();
        pair.b_t = Tensor::from_vec(values, (r, out), &openledger_llm::Device::Cpu).unwrap();
    }
    let path = dir.join(name);
    adapter.save_peft(&path, model.llama.config()).unwrap();
    path
}

fn prompt(model: &Model, text: &str) -> Vec<u32> {
    let rendered = model
        .chat
        .as_ref()
        .unwrap()
        .render(&[ChatMessage::new("user", text)])
        .unwrap();
    model.tokenizer.encode(&rendered).unwrap()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ..Default::default()
    }
}

/// A KV budget far smaller than the offered load: requests wait for memory, running ones are
/// preempted and recomputed, clients vanish mid-stream, one prompt can never fit. Every
/// finished answer is still exactly what the request gets alone, the impossible one gets a
/// clear error, and afterwards every KV block is back in the pool.
#[test]
fn a_small_kv_budget_preempts_and_recomputes_without_changing_answers_or_leaking_blocks() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let adapters: Vec<Arc<LoraAdapter>> = (0..3)
        .map(|i| {
            let targets: &[Target] = if i == 0 {
                &Target::ALL
            } else {
                &[Target::Q, Target::V]
            };
            let path = adapter_dir(
                &model,
                dir.path(),
                &format!("a{i}"),
                4 + 4 * i,
                targets,
                i as u64,
            );
            Arc::new(
                LoraAdapter::load_peft(&path, model.llama.config(), &openledger_llm::Device::Cpu)
                    .unwrap(),
            )
        })
        .collect();
    let block = model.llama.kv_bytes_per_position() * openledger_llm::model::KV_BLOCK;
    let engine = Engine::start_with(
        model.clone(),
        EngineConfig {
            max_batch: 8,
            kv_bytes: 6 * block,
        },
    );
    assert_eq!(engine.stats().kv_blocks_total.load(Relaxed), 6);
    let texts = [
        "the theme",
        "in the tin",
        "thin",
        "then the end",
        "the",
        "tin then",
        "them",
        "the thin tin",
        "nine",
        "then",
    ];
    let mut cases = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let tokens = prompt(&model, text);
        let adapter = (i % 4 != 3).then(|| adapters[i % 3].clone());
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(Request {
                tenant: None,
                prompt: tokens.clone(),
                params: greedy(40),
                adapter: adapter.clone(),
                events,
            })
            .unwrap();
        cases.push((tokens, adapter, rx));
    }
    // A prompt longer than the whole budget (6 blocks of 16 positions).
    let long: Vec<u32> = prompt(&model, &"then the thin tin ".repeat(15));
    assert!(long.len() > 96 && long.len() < 250, "{}", long.len());
    let (events, mut too_long) = tokio::sync::mpsc::unbounded_channel();
    engine
        .submit(Request {
            tenant: None,
            prompt: long,
            params: greedy(4),
            adapter: None,
            events,
        })
        .unwrap();
    for (i, (tokens, adapter, mut rx)) in cases.into_iter().enumerate() {
        if i % 5 == 2 {
            // This client reads one piece and goes away.
            let _ = rx.blocking_recv();
            drop(rx);
            continue;
        }
        let alone = generate_with(
            &model.llama,
            adapter.as_deref(),
            &model.tokenizer,
            &tokens,
            &greedy(40),
            |_| true,
        )
        .unwrap();
        let done = loop {
            match rx.blocking_recv().expect("the engine answers") {
                Event::Text(_) => {}
                Event::Done(done) => break done,
                Event::Failed(e) => panic!("request {i}: {e}"),
            }
        };
        assert_eq!(done.tokens, alone.tokens, "request {i} differs from alone");
    }
    match too_long.blocking_recv() {
        Some(Event::Failed(e)) => assert!(e.contains("KV budget is 6 blocks"), "{e}"),
        other => panic!("expected a clear failure, got {other:?}"),
    }
    assert!(
        engine.stats().preemptions.load(Relaxed) > 0,
        "the budget was small enough to force preemption"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.stats().kv_blocks_used.load(Relaxed) != 0
        || engine.stats().running.load(Relaxed) != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "KV blocks still held: {}",
            engine.stats().kv_blocks_used.load(Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two batch slots, one tenant queues six requests and another then queues two: the second
/// tenant's requests take the next free slots instead of waiting behind the whole flood.
#[test]
fn a_tenant_flooding_the_queue_does_not_make_another_wait_behind_it() {
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let engine = Engine::start_with(
        model.clone(),
        EngineConfig {
            max_batch: 2,
            kv_bytes: 1 << 30,
        },
    );
    let tokens = prompt(&model, "the theme");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    let mut requests = Vec::new();
    // Listeners first, then the eight submissions back to back: nothing slow (a thread start)
    // sits between two submissions for the engine to finish a request in.
    for (i, tenant) in ["a", "a", "a", "a", "a", "a", "b", "b"].iter().enumerate() {
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        requests.push(Request {
            tenant: Some(tenant.to_string()),
            prompt: tokens.clone(),
            params: greedy(48),
            adapter: None,
            events,
        });
        let done = done_tx.clone();
        threads.push(std::thread::spawn(move || {
            while let Some(event) = rx.blocking_recv() {
                if let Event::Done(_) | Event::Failed(_) = event {
                    break;
                }
            }
            done.send((i, tenant.to_string())).unwrap();
        }));
    }
    for request in requests {
        engine.submit(request).unwrap();
    }
    drop(done_tx);
    let order: Vec<(usize, String)> = done_rx.iter().collect();
    assert_eq!(order.len(), 8);
    let position = |i: usize| order.iter().position(|(j, _)| *j == i).unwrap();
    // Under first-come-first-served, tenant b's requests would finish 7th and 8th.
    assert!(
        position(6) < 4 && position(7) < 6,
        "tenant b waited behind tenant a: {order:?}"
    );
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn batched_sequences_with_mixed_adapters_answer_as_they_do_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let a = Arc::new(
        LoraAdapter::load_peft(
            &adapter_dir(&model, dir.path(), "a", 4, &[Target::Q, Target::V], 1),
            model.llama.config(),
            &openledger_llm::Device::Cpu,
        )
        .unwrap(),
    );
    let b = Arc::new(
        LoraAdapter::load_peft(
            &adapter_dir(&model, dir.path(), "b", 8, &Target::ALL, 2),
            model.llama.config(),
            &openledger_llm::Device::Cpu,
        )
        .unwrap(),
    );
    let cases: Vec<(Vec<u32>, Option<Arc<LoraAdapter>>)> = vec![
        (prompt(&model, "the theme"), Some(a.clone())),
        (prompt(&model, "in the tin"), Some(b.clone())),
        (prompt(&model, "thin"), None),
        (prompt(&model, "then the end"), Some(a.clone())),
        (prompt(&model, "the"), Some(b.clone())),
    ];
    let engine = Engine::start(model.clone(), 8);
    let mut receivers = Vec::new();
    for (tokens, adapter) in &cases {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(Request {
                tenant: None,
                prompt: tokens.clone(),
                params: greedy(24),
                adapter: adapter.clone(),
                events,
            })
            .unwrap();
        receivers.push(rx);
    }
    for ((tokens, adapter), mut rx) in cases.iter().zip(receivers) {
        let alone = generate_with(
            &model.llama,
            adapter.as_deref(),
            &model.tokenizer,
            tokens,
            &greedy(24),
            |_| true,
        )
        .unwrap();
        let mut streamed = String::new();
        let done = loop {
            match rx.blocking_recv().expect("the engine answers") {
                Event::Text(piece) => streamed.push_str(&piece),
                Event::Done(done) => break done,
                Event::Failed(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            done.tokens, alone.tokens,
            "tokens in the batch differ from alone"
        );
        assert_eq!(done.text, alone.text);
        assert_eq!(
            streamed, alone.text,
            "the streamed pieces add up to the answer"
        );
    }
    assert!(
        engine
            .stats()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed)
            < 5 * 25,
        "sequences shared steps"
    );
    // A prompt longer than the context is refused before it reaches the batch.
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = engine
        .submit(Request {
            tenant: None,
            prompt: vec![5; 300],
            params: greedy(4),
            adapter: None,
            events,
        })
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

struct Server {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

fn serve(model: Arc<Model>, adapters: Vec<(String, PathBuf)>) -> Server {
    serve_metered(model, adapters, None)
}

fn serve_metered(
    model: Arc<Model>,
    adapters: Vec<(String, PathBuf)>,
    meter: Option<Arc<dyn Meter>>,
) -> Server {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let slot: openlora::Slot = Default::default();
    let _ = slot.set(Serving {
        engine: Engine::start(model, 8),
        base_name: "tiny".into(),
        adapters: Registry::new(vec![Box::new(move || adapters.clone())], 1 << 20),
        meter,
        attributor: None,
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, openlora::router(slot)).await });
    Server {
        url,
        _runtime: runtime,
    }
}

fn post(url: &str, body: &str) -> (u16, String) {
    post_with_key(url, body, None)
}

fn post_with_key(url: &str, body: &str, key: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(url).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", &format!("Bearer {key}"));
    }
    let mut response = request.send(body).unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn the_openai_api_serves_the_base_and_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let path = adapter_dir(&model, dir.path(), "capitals", 8, &Target::ALL, 3);
    let adapter =
        LoraAdapter::load_peft(&path, model.llama.config(), &openledger_llm::Device::Cpu).unwrap();
    let server = serve(model.clone(), vec![("capitals".into(), path)]);

    let listed: serde_json::Value = serde_json::from_str(
        &ureq::get(format!("{}/v1/models", server.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "capitals"]);

    let expected = generate_with(
        &model.llama,
        Some(&adapter),
        &model.tokenizer,
        &prompt(&model, "the theme"),
        &greedy(12),
        |_| true,
    )
    .unwrap();
    let body = r#"{"model": "capitals", "messages": [{"role": "user", "content": "the theme"}], "max_tokens": 12, "temperature": 0}"#;
    let (status, text) = post(&format!("{}/v1/chat/completions", server.url), body);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        expected.text.as_str()
    );
    assert_eq!(answer["usage"]["completion_tokens"], expected.tokens.len());
    assert_eq!(answer["object"], "chat.completion");

    // Streamed: the deltas add up to the same answer, then [DONE].
    let streamed_body = body.replace("\"temperature\": 0", "\"temperature\": 0, \"stream\": true");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(format!("{}/v1/chat/completions", server.url))
        .header("content-type", "application/json")
        .send(streamed_body.as_str())
        .unwrap();
    let mut text = String::new();
    let mut done = false;
    for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    assert!(done);
    assert_eq!(text, expected.text);

    // Plain completions on the base model.
    let (status, text) = post(
        &format!("{}/v1/completions", server.url),
        r#"{"model": "tiny", "prompt": "the", "max_tokens": 5, "temperature": 0}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["object"],
        "text_completion"
    );

    // Errors in OpenAI's shape.
    for (body, status, code) in [
        (
            r#"{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}"#,
            404,
            "model_not_found",
        ),
        (r#"{"model": "tiny", "messages": "#, 400, "invalid_json"),
        (
            r#"{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000}"#,
            400,
            "invalid_value",
        ),
        (r#"{"model": "tiny", "messages": []}"#, 400, "invalid_value"),
    ] {
        let (got, text) = post(&format!("{}/v1/chat/completions", server.url), body);
        assert_eq!(got, status, "{body}: {text}");
        let error: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{body}: {got} {text:?}: {e}"));
        assert_eq!(error["error"]["code"], code, "{text}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    let long = "the ".repeat(400);
    let (got, text) = post(
        &format!("{}/v1/chat/completions", server.url),
        &format!(
            r#"{{"model": "tiny", "messages": [{{"role": "user", "content": "{long}"}}], "max_tokens": 4}}"#
        ),
    );
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("context_length_exceeded"), "{text}");

    // A client that hangs up mid-stream frees its slot.
    let long_stream = r#"{"model": "tiny", "messages": [{"role": "user", "content": "the"}], "max_tokens": 200, "stream": true}"#;
    let response = agent
        .post(format!("{}/v1/chat/completions", server.url))
        .header("content-type", "application/json")
        .send(long_stream)
        .unwrap();
    let mut reader = std::io::BufReader::new(response.into_body().into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    let metrics = || {
        ureq::get(format!("{}/metrics", server.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !metrics().contains("openlora_running_sequences 0") {
        assert!(std::time::Instant::now() < deadline, "{}", metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = metrics();
    assert!(
        metrics.contains("openlora_adapter_cache_misses_total 1"),
        "{metrics}"
    );
}

/// Adapter admin: list with cache state, load, pin (never evicted), unpin, unload; a budget
/// that holds one adapter evicts the least recently used unpinned one.
#[test]
fn adapters_can_be_listed_loaded_pinned_and_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let a = adapter_dir(&model, dir.path(), "a", 8, &Target::ALL, 1);
    let b = adapter_dir(&model, dir.path(), "b", 8, &Target::ALL, 2);
    let one_adapter = {
        let loaded =
            LoraAdapter::load_peft(&a, model.llama.config(), &openledger_llm::Device::Cpu).unwrap();
        loaded
            .layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| (p.a_t.elem_count() + p.b_t.elem_count()) * 4)
            .sum::<usize>()
    };
    let registry = Registry::new(
        vec![Box::new(move || {
            vec![("a".into(), a.clone()), ("b".into(), b.clone())]
        })],
        one_adapter,
    );
    let config = model.llama.config();
    let resident = |r: &Registry| {
        r.states()
            .into_iter()
            .filter(|s| s.resident)
            .map(|s| s.id)
            .collect::<Vec<_>>()
    };
    registry.get("a", config).unwrap().unwrap();
    registry.get("b", config).unwrap().unwrap();
    assert_eq!(
        resident(&registry),
        ["b"],
        "the budget holds one: a was evicted"
    );
    assert!(registry.pin("a", config, true).unwrap());
    assert_eq!(resident(&registry), ["a"]);
    registry.get("b", config).unwrap().unwrap();
    assert_eq!(
        resident(&registry),
        ["a", "b"],
        "a pinned one is never evicted"
    );
    assert!(
        registry
            .states()
            .iter()
            .any(|s| s.id == "a" && s.pinned && s.bytes == one_adapter)
    );
    assert!(registry.pin("a", config, false).unwrap());
    assert!(registry.unload("a"));
    assert!(!registry.unload("a"));
    assert_eq!(resident(&registry), ["b"]);
    assert!(!registry.pin("nope", config, true).unwrap());
    assert!(registry.get("nope", config).unwrap().is_none());

    // The same over HTTP.
    let server = serve(model.clone(), vec![("a".into(), dir.path().join("a"))]);
    let (status, text) = post(&format!("{}/v1/adapters/a/pin", server.url), "");
    assert_eq!(status, 200, "{text}");
    let listed: serde_json::Value = serde_json::from_str(
        &ureq::get(format!("{}/v1/adapters", server.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listed["data"][0]["pinned"], true);
    assert_eq!(
        post(&format!("{}/v1/adapters/zzz/load", server.url), "").0,
        404
    );
    assert_eq!(
        post(&format!("{}/v1/adapters/a/explode", server.url), "").0,
        400
    );
    let (status, text) = post(&format!("{}/v1/adapters/a/unload", server.url), "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["resident"],
        false
    );
}

/// A meter with one known key whose account holds `budget` wei; the base model is free and
/// every adapter costs 1,000 wei per 1,000 tokens (1 wei a token).
struct TestMeter {
    budget: u128,
    /// Wei committed (reserved or charged), and every finished request: account and usage.
    state: std::sync::Mutex<(u128, Vec<Finished>)>,
}

type Finished = (Option<String>, Option<Usage>);

impl Meter for TestMeter {
    fn admit(&self, key: Option<&str>, model: &str, most: u64) -> Result<Admission, MeterError> {
        if model == "tiny" {
            return Ok(Admission {
                account: None,
                model_id: 0,
                price_per_1k: 0,
                reserved: 0,
            });
        }
        if key != Some("sk-good") {
            return Err(MeterError::Unauthorized(format!("unknown API key {key:?}")));
        }
        let mut state = self.state.lock().unwrap();
        let need = openlora::metering::fee(most, 1_000);
        if state.0 + need > self.budget {
            return Err(MeterError::PaymentRequired(format!(
                "this request may cost {need} wei; the deposit has {} left",
                self.budget - state.0
            )));
        }
        state.0 += need;
        Ok(Admission {
            account: Some("0xa".into()),
            model_id: 1,
            price_per_1k: 1_000,
            reserved: need,
        })
    }

    fn finish(&self, admission: &Admission, usage: Option<Usage>) {
        let mut state = self.state.lock().unwrap();
        state.0 -= admission.reserved;
        if let Some(u) = &usage {
            state.0 += openlora::metering::fee(
                u.prompt_tokens + u.completion_tokens,
                admission.price_per_1k,
            );
        }
        state.1.push((admission.account.clone(), usage));
    }
}

#[test]
fn requests_are_admitted_by_the_meter_before_compute_and_charged_what_they_used() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let path = adapter_dir(&model, dir.path(), "paid", 4, &Target::ALL, 5);
    let meter = Arc::new(TestMeter {
        budget: 60,
        state: Default::default(),
    });
    let server = serve_metered(
        model.clone(),
        vec![("paid".into(), path)],
        Some(meter.clone()),
    );
    let url = format!("{}/v1/chat/completions", server.url);
    let body = |model: &str, max: usize| {
        format!(
            r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": {max}, "temperature": 0}}"#
        )
    };
    let steps = || meter.state.lock().unwrap().1.len();

    let (status, text) = post(&url, &body("tiny", 4));
    assert_eq!(status, 200, "the free base model needs no key: {text}");
    let (status, text) = post(&url, &body("paid", 4));
    assert_eq!(status, 401, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key");

    let (status, text) = post_with_key(&url, &body("paid", 5), Some("sk-good"));
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let used = answer["usage"]["total_tokens"].as_u64().unwrap();
    let (account, usage) = meter.state.lock().unwrap().1.last().cloned().unwrap();
    assert_eq!(account.as_deref(), Some("0xa"));
    let usage = usage.expect("a finished request records its usage");
    assert_eq!(usage.prompt_tokens + usage.completion_tokens, used);
    assert_eq!(
        meter.state.lock().unwrap().0,
        used as u128,
        "charged what it used"
    );

    // The worst case no longer fits what is left: refused before compute, nothing recorded.
    let before = steps();
    let (status, text) = post_with_key(&url, &body("paid", 50), Some("sk-good"));
    assert_eq!(status, 402, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "insufficient_deposit");
    assert!(error["error"]["message"].as_str().unwrap().contains("wei"));
    assert_eq!(steps(), before);
}

/// The soft limit on open files raised to the hard limit (a thousand clients and their
/// server-side sockets need ~2,100).
fn raise_open_file_limit() {
    #[allow(unsafe_code)]
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A thousand clients at once, a tenth of them hanging up right after sending, some asking
/// for an adapter whose weights file is corrupt: every client that stays gets an answer (the
/// corrupt adapter an OpenAI-shaped error naming the problem), the server keeps serving, and
/// afterwards nothing is running and every KV block is free.
#[test]
fn a_thousand_concurrent_clients_some_vanishing_some_hitting_a_corrupt_adapter() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(tiny_model(&TinyConfig::default()));
    let good = adapter_dir(&model, dir.path(), "good", 4, &[Target::Q, Target::V], 5);
    let broken = adapter_dir(&model, dir.path(), "broken", 4, &[Target::Q, Target::V], 6);
    let weights = broken.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let server = serve(
        model,
        vec![("good".into(), good), ("broken".into(), broken)],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let clients = tokio::runtime::Runtime::new().unwrap();
    let outcomes: Vec<(usize, Option<String>)> = clients.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..1000usize {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let model = match i % 50 {
                    0 => "broken",
                    n if n % 2 == 0 => "good",
                    _ => "tiny",
                };
                let body = format!(
                    r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "the"}}], "max_tokens": 2, "temperature": 0}}"#
                );
                let request = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                if i % 10 == 3 {
                    // Hangs up without reading the answer.
                    return (i, None);
                }
                let mut response = String::new();
                stream.read_to_string(&mut response).await.unwrap();
                (i, Some(response))
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        outcomes
    });
    let mut answered = 0;
    for (i, response) in outcomes {
        let Some(response) = response else { continue };
        if i % 50 == 0 {
            assert!(
                !response.starts_with("HTTP/1.1 200"),
                "the corrupt adapter was served: {response}"
            );
            assert!(
                response.contains("\"error\"") && response.contains("adapter_model.safetensors"),
                "client {i}: {response}"
            );
        } else {
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "client {i}: {response}"
            );
            assert!(
                response.contains("chat.completion"),
                "client {i}: {response}"
            );
            answered += 1;
        }
    }
    assert!(answered >= 850, "{answered}");
    // Still serving, and nothing left running or holding KV memory.
    let metric = |name: &str| -> f64 {
        let text = ureq::get(format!("{}/metrics", server.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric("openlora_running_sequences") != 0.0
        || metric("openlora_kv_blocks_used") != 0.0
        || metric("openlora_queue_depth") != 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine did not drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, text) = post(
        &format!("{}/v1/chat/completions", server.url),
        r#"{"model": "good", "messages": [{"role": "user", "content": "the"}], "max_tokens": 2}"#,
    );
    assert_eq!(status, 200, "{text}");
}
