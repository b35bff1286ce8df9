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
use openlora::{Engine, Event, Registry, Request, Serving};

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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let slot: openlora::Slot = Default::default();
    let _ = slot.set(Serving {
        engine: Engine::start(model, 8),
        base_name: "tiny".into(),
        adapters: Registry::new(vec![Box::new(move || adapters.clone())], 1 << 20),
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
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
