//! The OpenAI-compatible HTTP API: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions` (streaming as server-sent events, or whole), with `usage`, and
//! errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) so the
//! official clients raise their usual exceptions. `model` is the base model's name or an
//! adapter's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openledger_llm::{ChatMessage, FinishReason, LlmError, LoraAdapter, SamplingParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{Engine, Event, Request};
use crate::metering::{Admission, Attributed, Attributor, Meter, MeterError, Usage, response_hash};
use crate::registry::Registry;

/// What the API serves: the engine (with its base model), the adapters, and who pays.
pub struct Serving {
    pub engine: Engine,
    pub base_name: String,
    pub adapters: Registry,
    /// Charges requests; `None` serves everything free (tests, private deployments).
    pub meter: Option<Arc<dyn Meter>>,
    /// Traces completions to datanet rows; its shares go into the usage record.
    pub attributor: Option<Arc<dyn Attributor>>,
}

/// The serving state, filled in once the base model has loaded (until then requests get 503).
pub type Slot = Arc<std::sync::OnceLock<Serving>>;

pub fn router(slot: Slot) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/metrics", get(metrics))
        .route("/v1/adapters", get(adapters))
        .route("/v1/adapters/{name}/{action}", post(adapter_action))
        .with_state(slot)
}

struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }})),
        )
            .into_response()
    }
}

fn invalid(param: Option<&'static str>, code: &'static str, message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid_request_error",
        code,
        param,
        message,
    }
}

impl From<LlmError> for ApiError {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::ContextFull { .. } => {
                invalid(Some("messages"), "context_length_exceeded", e.to_string())
            }
            LlmError::BadInput(_) | LlmError::Unsupported(_) => {
                invalid(None, "invalid_value", e.to_string())
            }
            other => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                code: "internal_error",
                param: None,
                message: other.to_string(),
            },
        }
    }
}

impl From<MeterError> for ApiError {
    fn from(e: MeterError) -> Self {
        let (status, kind, code) = match &e {
            MeterError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            MeterError::PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "insufficient_deposit",
            ),
            MeterError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "metering_unavailable",
            ),
        };
        ApiError {
            status,
            kind,
            code,
            param: None,
            message: e.to_string(),
        }
    }
}

/// An admitted request's hold on the meter: completing it records the usage; dropping it
/// (failure, vanished client) releases the reservation uncharged.
struct Metered {
    meter: Arc<dyn Meter>,
    admission: Admission,
    finished: bool,
}

impl Metered {
    fn complete(
        mut self,
        prompt_tokens: usize,
        completion: &[u32],
        attributed: Option<&Attributed>,
    ) {
        self.finished = true;
        self.meter.finish(
            &self.admission,
            Some(Usage {
                prompt_tokens: prompt_tokens as u64,
                completion_tokens: completion.len() as u64,
                response_hash: response_hash(completion),
                attribution_hash: attributed.map_or([0; 32], |a| a.record_hash),
                shares: attributed.map(|a| a.shares.clone()).unwrap_or_default(),
            }),
        );
    }
}

/// The attribution of a finished completion, computed off the async threads; `None` when the
/// server has no attributor or the model nothing to attribute to.
async fn attribute(slot: &Slot, model: &str, completion: &[u32]) -> Option<Attributed> {
    let attributor = serving(slot).ok()?.attributor.clone()?;
    let (model, completion) = (model.to_string(), completion.to_vec());
    tokio::task::spawn_blocking(move || attributor.attribute(&model, &completion))
        .await
        .ok()
        .flatten()
}

/// The attribution as the client sees it: the detail, with each span's text.
fn attribution_json(slot: &Slot, attributed: Option<&Attributed>, completion: &[u32]) -> Value {
    let Some(a) = attributed else {
        return Value::Null;
    };
    let mut detail = a.detail.clone();
    if let (Ok(s), Some(spans)) = (serving(slot), detail["spans"].as_array_mut()) {
        for span in spans {
            let (start, end) = (
                span["start"].as_u64().unwrap_or(0) as usize,
                span["end"].as_u64().unwrap_or(0) as usize,
            );
            if start < end && end <= completion.len() {
                let text = s
                    .engine
                    .model()
                    .tokenizer
                    .decode(&completion[start..end])
                    .unwrap_or_default();
                span["text"] = json!(text);
            }
        }
    }
    detail
}

impl Drop for Metered {
    fn drop(&mut self) {
        if !self.finished {
            self.meter.finish(&self.admission, None);
        }
    }
}

/// The bearer token of `Authorization: Bearer KEY`, if any.
fn api_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let key = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    (!key.is_empty()).then(|| key.to_string())
}

fn serving(slot: &Slot) -> Result<&Serving, ApiError> {
    slot.get().ok_or(ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: "model_loading",
        param: None,
        message: "the base model is still loading; try again shortly".into(),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `f` on the blocking pool: adapter sources may read disk or ask the chain.
async fn off_thread<T: Send + 'static>(
    slot: &Slot,
    f: impl FnOnce(&Serving) -> T + Send + 'static,
) -> Result<T, ApiError> {
    serving(slot)?;
    let slot = slot.clone();
    tokio::task::spawn_blocking(move || f(slot.get().expect("checked above")))
        .await
        .map_err(|e| LlmError::Compute(e.to_string()).into())
}

async fn models(State(slot): State<Slot>) -> Result<Response, ApiError> {
    let s = serving(&slot)?;
    let mut data =
        vec![json!({"id": s.base_name, "object": "model", "created": 0, "owned_by": "openledger"})];
    for name in off_thread(&slot, |s| s.adapters.names()).await? {
        data.push(json!({"id": name, "object": "model", "created": 0, "owned_by": "openledger", "parent": s.base_name}));
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    n: Option<usize>,
    /// OpenLedger extension: include the completion's attribution (which spans, which rows,
    /// which contributions) in the response.
    #[serde(default)]
    attribution: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        invalid(
            None,
            "invalid_json",
            format!("the request body is not a valid request: {e}"),
        )
    })
}

impl Common {
    fn params(&self, context: usize) -> Result<SamplingParams, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid(
                Some("n"),
                "invalid_value",
                "only n = 1 is supported".into(),
            ));
        }
        // Unset: as long as the context allows (the decoder stops when it is full), capped.
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(1024.min(context - 1));
        if max_tokens == 0 || max_tokens >= context {
            return Err(invalid(
                Some("max_tokens"),
                "invalid_value",
                format!(
                    "max_tokens must be between 1 and {} (the model's context), got {max_tokens}",
                    context - 1
                ),
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(invalid(
                Some("temperature"),
                "invalid_value",
                format!("temperature must be between 0 and 2, got {temperature}"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(invalid(
                Some("stop"),
                "invalid_value",
                "stop takes up to 4 non-empty strings".into(),
            ));
        }
        let params = SamplingParams {
            temperature,
            top_p: self.top_p.unwrap_or(1.0),
            seed: self.seed.unwrap_or(0),
            max_tokens,
            stop,
            ..SamplingParams::default()
        };
        params.validate()?;
        Ok(params)
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o["include_usage"].as_bool())
            .unwrap_or(false)
    }
}

/// The adapter a `model` names (`None` for the base model).
async fn resolve(slot: &Slot, model: &str) -> Result<Option<Arc<LoraAdapter>>, ApiError> {
    let s = serving(slot)?;
    if model == s.base_name {
        return Ok(None);
    }
    let slot = slot.clone();
    let name = model.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let s = slot.get().expect("checked above");
        s.adapters.get(&name, s.engine.model().llama.config())
    })
    .await
    .map_err(|e| LlmError::Compute(e.to_string()))?
    .map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        kind: "invalid_request_error",
        code: "adapter_unloadable",
        param: Some("model"),
        message: format!("adapter {model:?} cannot be loaded for this base model: {e}"),
    })?;
    found.map(Some).ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "model_not_found",
        param: Some("model"),
        message: format!("the model {model:?} does not exist; GET /v1/models lists them"),
    })
}

#[derive(Deserialize)]
struct ChatBody {
    #[serde(flatten)]
    common: Common,
    messages: Vec<ChatMessageIn>,
}

#[derive(Deserialize)]
struct ChatMessageIn {
    role: String,
    content: Value,
}

/// A message's text: a string, or OpenAI's list of parts (text parts joined).
fn content_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")),
        Value::Null => Ok(String::new()),
        _ => Err(invalid(
            Some("messages"),
            "invalid_value",
            "message content must be a string or a list of text parts".into(),
        )),
    }
}

async fn chat(
    State(slot): State<Slot>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: ChatBody = parse(&body)?;
    let s = serving(&slot)?;
    if body.messages.is_empty() {
        return Err(invalid(
            Some("messages"),
            "invalid_value",
            "messages is empty".into(),
        ));
    }
    let messages: Vec<ChatMessage> = body
        .messages
        .iter()
        .map(|m| Ok(ChatMessage::new(&m.role, &content_text(&m.content)?)))
        .collect::<Result<_, ApiError>>()?;
    let model = s.engine.model();
    let template = model.chat.as_ref().ok_or_else(|| {
        invalid(
            None,
            "unsupported",
            "this model has no chat template; use /v1/completions".into(),
        )
    })?;
    let prompt = model.tokenizer.encode(&template.render(&messages)?)?;
    run(slot.clone(), body.common, api_key(&headers), prompt, true).await
}

#[derive(Deserialize)]
struct CompletionBody {
    #[serde(flatten)]
    common: Common,
    prompt: Value,
}

async fn completions(
    State(slot): State<Slot>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: CompletionBody = parse(&body)?;
    let s = serving(&slot)?;
    let Some(text) = body.prompt.as_str() else {
        return Err(invalid(
            Some("prompt"),
            "invalid_value",
            "prompt must be a string".into(),
        ));
    };
    let prompt = s.engine.model().tokenizer.encode(text)?;
    run(slot.clone(), body.common, api_key(&headers), prompt, false).await
}

fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

async fn run(
    slot: Slot,
    common: Common,
    api_key: Option<String>,
    prompt: Vec<u32>,
    chat: bool,
) -> Result<Response, ApiError> {
    let s = serving(&slot)?;
    let adapter = resolve(&slot, &common.model).await?;
    let params = common.params(s.engine.model().llama.config().context_length)?;
    let prompt_tokens = prompt.len();
    // Payment is settled before any compute: the worst case (the whole prompt plus every
    // token allowed) must be covered.
    let mut metered = match s.meter.clone() {
        None => None,
        Some(meter) => {
            let model = common.model.clone();
            let most = (prompt_tokens + params.max_tokens) as u64;
            let blocking = meter.clone();
            let admission = tokio::task::spawn_blocking(move || {
                blocking.admit(api_key.as_deref(), &model, most)
            })
            .await
            .map_err(|e| LlmError::Compute(e.to_string()))??;
            Some(Metered {
                meter,
                admission,
                finished: false,
            })
        }
    };
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tenant = metered.as_ref().and_then(|m| m.admission.account.clone());
    s.engine.submit(Request {
        tenant,
        prompt,
        params,
        adapter,
        events,
    })?;
    let id = format!(
        "{}-{:x}",
        if chat { "chatcmpl" } else { "cmpl" },
        now() ^ (prompt_tokens as u64) << 32 ^ rand_bits()
    );
    let created = now();
    let model = common.model.clone();
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !common.stream {
        let mut text = String::new();
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(piece) => text.push_str(&piece),
                Event::Done(done) => {
                    let choice = if chat {
                        json!({"index": 0, "message": {"role": "assistant", "content": done.text}, "finish_reason": finish_name(done.finish_reason), "logprobs": null})
                    } else {
                        json!({"index": 0, "text": done.text, "finish_reason": finish_name(done.finish_reason), "logprobs": null})
                    };
                    let completion = done.tokens.len();
                    let attributed = attribute(&slot, &model, &done.tokens).await;
                    if let Some(m) = metered.take() {
                        m.complete(prompt_tokens, &done.tokens, attributed.as_ref());
                    }
                    let mut body = json!({
                        "id": id, "object": object, "created": created, "model": model,
                        "choices": [choice],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
                    });
                    if common.attribution {
                        body["attribution"] =
                            attribution_json(&slot, attributed.as_ref(), &done.tokens);
                    }
                    return Ok(Json(body).into_response());
                }
                Event::Failed(message) => {
                    return Err(ApiError {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        kind: "server_error",
                        code: "generation_failed",
                        param: None,
                        message,
                    });
                }
            }
        }
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: "generation_failed",
            param: None,
            message: "the engine dropped the request".into(),
        });
    }
    let include_usage = common.include_usage();
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |delta: Value, finish: Value| {
        let choice = if chat {
            json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
        } else {
            json!({"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish, "logprobs": null})
        };
        json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice]})
    };
    let mut pending = std::collections::VecDeque::new();
    if chat {
        pending
            .push_back(chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string());
    }
    // Dropping this stream (the client went away) closes `rx`, and the engine drops the
    // sequence at its next step.
    // The meter's hold travels with the stream: dropped with it if the client goes away.
    let want_attribution = common.attribution;
    let model = common.model.clone();
    let stream = futures::stream::unfold(
        (rx, pending, false, metered),
        move |(mut rx, mut pending, mut ended, mut metered)| {
            let chunk = chunk.clone();
            let (slot, model) = (slot.clone(), model.clone());
            async move {
                loop {
                    if let Some(data) = pending.pop_front() {
                        return Some((
                            Ok::<_, Infallible>(SseEvent::default().data(data)),
                            (rx, pending, ended, metered),
                        ));
                    }
                    if ended {
                        return None;
                    }
                    match rx.recv().await {
                        Some(Event::Text(piece)) => {
                            pending.push_back(
                                chunk(json!({"content": piece}), Value::Null).to_string(),
                            );
                        }
                        Some(Event::Done(c)) => {
                            let attributed = attribute(&slot, &model, &c.tokens).await;
                            if let Some(m) = metered.take() {
                                m.complete(c.prompt_tokens, &c.tokens, attributed.as_ref());
                            }
                            let mut last = chunk(json!({}), json!(finish_name(c.finish_reason)));
                            if want_attribution {
                                last["attribution"] =
                                    attribution_json(&slot, attributed.as_ref(), &c.tokens);
                            }
                            if include_usage {
                                last["usage"] = json!({"prompt_tokens": c.prompt_tokens, "completion_tokens": c.tokens.len(), "total_tokens": c.prompt_tokens + c.tokens.len()});
                            }
                            pending.push_back(last.to_string());
                            pending.push_back("[DONE]".into());
                            ended = true;
                        }
                        Some(Event::Failed(message)) => {
                            pending.push_back(json!({"error": {"message": message, "type": "server_error", "code": "generation_failed", "param": null}}).to_string());
                            pending.push_back("[DONE]".into());
                            ended = true;
                        }
                        None => return None,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).into_response())
}

fn rand_bits() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// Adapter admin: every adapter with its cache state.
async fn adapters(State(slot): State<Slot>) -> Result<Response, ApiError> {
    let states = off_thread(&slot, |s| s.adapters.states()).await?;
    Ok(Json(json!({"object": "list", "data": states})).into_response())
}

/// Adapter admin: `load`, `unload`, `pin`, `unpin`.
async fn adapter_action(
    State(slot): State<Slot>,
    axum::extract::Path((name, action)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    serving(&slot)?;
    if !matches!(action.as_str(), "load" | "unload" | "pin" | "unpin") {
        return Err(invalid(
            None,
            "invalid_value",
            format!("unknown action {action:?}: use load, unload, pin or unpin"),
        ));
    }
    let not_found = |name: &str| ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "model_not_found",
        param: Some("name"),
        message: format!("no adapter {name:?}; GET /v1/adapters lists them"),
    };
    let blocking_slot = slot.clone();
    let action_name = action.clone();
    let target = name.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<bool, LlmError> {
        let s = blocking_slot.get().expect("checked above");
        let config = s.engine.model().llama.config();
        match action_name.as_str() {
            "load" => Ok(s.adapters.get(&target, config)?.is_some()),
            "pin" => s.adapters.pin(&target, config, true),
            "unpin" => s.adapters.pin(&target, config, false),
            _ => Ok(s.adapters.unload(&target) || s.adapters.names().contains(&target)),
        }
    })
    .await
    .map_err(|e| LlmError::Compute(e.to_string()))??;
    if !found {
        return Err(not_found(&name));
    }
    let state = off_thread(&slot, |s| s.adapters.states())
        .await?
        .into_iter()
        .find(|a| a.id == name);
    Ok(Json(json!(state)).into_response())
}

async fn metrics(State(slot): State<Slot>) -> Result<Response, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = serving(&slot)?;
    let st = s.engine.stats();
    let (resident, bytes) = s.adapters.resident();
    let text = format!(
        "# TYPE openlora_queue_depth gauge\nopenlora_queue_depth {}\n\
         # TYPE openlora_running_sequences gauge\nopenlora_running_sequences {}\n\
         # TYPE openlora_generated_tokens_total counter\nopenlora_generated_tokens_total {}\n\
         # TYPE openlora_prompt_tokens_total counter\nopenlora_prompt_tokens_total {}\n\
         # TYPE openlora_steps_total counter\nopenlora_steps_total {}\n\
         # TYPE openlora_adapter_cache_hits_total counter\nopenlora_adapter_cache_hits_total {}\n\
         # TYPE openlora_adapter_cache_misses_total counter\nopenlora_adapter_cache_misses_total {}\n\
         # TYPE openlora_resident_adapters gauge\nopenlora_resident_adapters {resident}\n\
         # TYPE openlora_resident_adapter_bytes gauge\nopenlora_resident_adapter_bytes {bytes}\n\
         # TYPE openlora_kv_blocks_total gauge\nopenlora_kv_blocks_total {}\n\
         # TYPE openlora_kv_blocks_used gauge\nopenlora_kv_blocks_used {}\n\
         # TYPE openlora_preemptions_total counter\nopenlora_preemptions_total {}\n",
        st.queued.load(Relaxed) + st.waiting.load(Relaxed),
        st.running.load(Relaxed),
        st.generated_tokens.load(Relaxed),
        st.prompt_tokens.load(Relaxed),
        st.steps.load(Relaxed),
        s.adapters.hits.load(Relaxed),
        s.adapters.misses.load(Relaxed),
        st.kv_blocks_total.load(Relaxed),
        st.kv_blocks_used.load(Relaxed),
        st.preemptions.load(Relaxed),
    ) + &st.time_to_first_token.render(
        "openlora_time_to_first_token_seconds",
        "From a request's submission to its first generated token.",
    ) + &s.adapters.load_latency.render(
        "openlora_adapter_load_seconds",
        "Loading an adapter from disk into the RAM cache.",
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}
