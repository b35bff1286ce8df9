//! Proof of Attribution on the node and from the command line.
//!
//! - [`NodeAttributor`]: OpenLoRA's attributor. A served fine-tune (a training job by its name,
//!   or a published `model-{id}` whose adapter a job made) is attributed over the span index
//!   its job built from its training rows; the record's shares go into the usage record and so
//!   into settlement.
//! - `POST /v1/attribution` (record for a response), `POST /v1/attribution/verify` (recompute
//!   one and compare).
//! - `openledger attribute` and `openledger attribute verify`, clients of those endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::{Args, Subcommand};
use openledger_attribution::{
    AttributionRecord, GradientParams, GradientRecord, Index, METHOD_SPAN_V1, SpanParams,
    attribute, response_hash,
};
use openledger_factory::Factory;
use openledger_primitives::B256;
use openlora::metering::{Attributed, Attributor};
use serde_json::{Value, json};

use crate::published::PublishedAdapters;

/// Attribution of the fine-tunes this node's factory made: the span path for every served
/// completion, the gradient path on request.
pub struct NodeAttributor {
    factory: Factory,
    published: Arc<PublishedAdapters>,
    models: openledger_llm::ModelStore,
    params: SpanParams,
    /// Open indexes by job id (memory-mapped; opened once).
    indexes: Mutex<HashMap<u64, Arc<Index>>>,
    /// Base models with f32 weights (gradients need them), by store name; loaded on demand.
    trainable: Mutex<HashMap<String, Arc<openledger_llm::Model>>>,
}

/// Spans listed in a response's attribution detail, and rows per span.
const DETAIL_SPANS: usize = 32;
const DETAIL_ROWS: usize = 8;

impl NodeAttributor {
    pub fn new(
        factory: Factory,
        published: Arc<PublishedAdapters>,
        models: openledger_llm::ModelStore,
        params: SpanParams,
    ) -> Self {
        Self {
            factory,
            published,
            models,
            params,
            indexes: Mutex::new(HashMap::new()),
            trainable: Mutex::new(HashMap::new()),
        }
    }

    /// The gradient-path record of `response` to `prompt` by `model`: the response's loss
    /// gradient under the fine-tune, scored against every training row's stored sketch.
    pub fn gradient_record(
        &self,
        model: &str,
        prompt: &str,
        response: &str,
        damping: f64,
        top_k: u32,
    ) -> Result<Option<(GradientRecord, Value)>> {
        use openledger_llm::influence::{GradientProbe, GradientStore, datainf};
        let Some((job, adapter_hash)) = self.job_of(model) else {
            return Ok(None);
        };
        let record = self.factory.get(job)?;
        let store = GradientStore::decode(
            &std::fs::read(self.factory.gradients_path(job))
                .with_context(|| format!("job {job} kept no gradient store"))?,
        )?;
        let base = {
            let mut loaded = self.trainable.lock().expect("trainable models lock");
            match loaded.get(&record.spec.base_model) {
                Some(m) => m.clone(),
                None => {
                    let (_, path) =
                        self.models
                            .find(&record.spec.base_model)?
                            .with_context(|| {
                                format!("base model {} is not installed", record.spec.base_model)
                            })?;
                    let m = Arc::new(openledger_llm::Model::load_with(
                        &path,
                        openledger_llm::Weights::Dequantized,
                    )?);
                    loaded.insert(record.spec.base_model.clone(), m.clone());
                    m
                }
            }
        };
        let adapter = openledger_llm::LoraAdapter::load_peft(
            &self.factory.adapter_dir(job),
            base.llama.config(),
            &openledger_llm::Device::Cpu,
        )?;
        let template = base
            .chat
            .as_ref()
            .context("the base model has no chat template")?;
        let segments = template.segments(&[
            openledger_llm::ChatMessage::new("user", prompt),
            openledger_llm::ChatMessage::new("assistant", response),
        ])?;
        let example = base.tokenizer.encode_segments(&segments, false)?;
        let answer = base.tokenizer.encode(response)?;
        let probe = GradientProbe::new(&base.llama, &adapter)?;
        let (test, loss) = probe.gradient(&example, &store.sketch)?;
        let scores = datainf(&store.gradients(), &test, store.sketch.width, damping);
        let per_row: Vec<(u64, f64)> = store
            .rows
            .iter()
            .zip(&scores)
            .map(|(r, &s)| (r.contribution_id, s))
            .collect();
        let roots = self
            .index(job)
            .map(|i| i.snapshot_roots().to_vec())
            .unwrap_or_default();
        let params = GradientParams {
            sketch_width: store.sketch.width as u32,
            sketch_seed: store.sketch.seed,
            damping,
            top_k,
        };
        let record = GradientRecord::from_scores(
            adapter_hash.0,
            roots,
            response_hash(&answer),
            params,
            &per_row,
        );
        let mut top: Vec<(usize, f64)> = scores.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let rows: Vec<Value> = top
            .iter()
            .take(DETAIL_ROWS)
            .map(|&(i, s)| {
                json!({
                    "row": format!("0x{}", alloy_primitives::hex::encode(store.rows[i].row)),
                    "contribution_id": store.rows[i].contribution_id,
                    "score": s,
                })
            })
            .collect();
        let detail = json!({
            "hash": format!("0x{}", alloy_primitives::hex::encode(record.hash())),
            "record": serde_json::to_value(&record)?,
            "response_loss": loss,
            "top_rows": rows,
        });
        Ok(Some((record, detail)))
    }

    /// The job that made the fine-tune served as `model`, and its adapter's hash.
    fn job_of(&self, model: &str) -> Option<(u64, B256)> {
        let jobs = self.factory.list();
        let adapter = match jobs.iter().find(|j| j.name == model) {
            Some(job) => return Some((job.id, job.result.as_ref()?.adapter_hash)),
            None => {
                self.published
                    .list()
                    .into_iter()
                    .find(|p| p.name == model)?
                    .adapter_hash
            }
        };
        jobs.iter()
            .find(|j| j.result.as_ref().is_some_and(|r| r.adapter_hash == adapter))
            .map(|j| (j.id, adapter))
    }

    fn index(&self, job: u64) -> Option<Arc<Index>> {
        let mut indexes = self.indexes.lock().expect("indexes lock");
        if let Some(index) = indexes.get(&job) {
            return Some(index.clone());
        }
        match Index::open(self.factory.span_index_dir(job)) {
            Ok(index) => {
                let index = Arc::new(index);
                indexes.insert(job, index.clone());
                Some(index)
            }
            Err(e) => {
                tracing::debug!("job {job} has no span index: {e}");
                None
            }
        }
    }

    /// The record and the detail for `response` by `model`, with `params`.
    pub fn record(
        &self,
        model: &str,
        response: &[u32],
        params: &SpanParams,
    ) -> Result<Option<(AttributionRecord, Value)>> {
        let Some((job, adapter)) = self.job_of(model) else {
            return Ok(None);
        };
        let Some(index) = self.index(job) else {
            return Ok(None);
        };
        let found = attribute(&index, response, params)?;
        let record = AttributionRecord {
            model: adapter.0,
            snapshot_roots: index.snapshot_roots().to_vec(),
            response_hash: response_hash(response),
            method: METHOD_SPAN_V1.to_string(),
            params: *params,
            contributions: found.contributions.clone(),
        };
        let spans: Vec<Value> = found
            .spans
            .iter()
            .filter(|s| !s.skipped)
            .take(DETAIL_SPANS)
            .map(|s| {
                let rows: Vec<Value> = index
                    .occurrences_in(s.span.range, DETAIL_ROWS)
                    .into_iter()
                    .map(|o| {
                        json!({
                            "row": o.doc.row_id,
                            "contribution_id": o.doc.contribution_id,
                            "contributor": format!("0x{}", alloy_primitives::hex::encode(o.doc.contributor)),
                        })
                    })
                    .collect();
                json!({
                    "start": s.span.start,
                    "end": s.span.end,
                    "weight": s.weight,
                    "occurrences": s.span.count(),
                    "rows": rows,
                })
            })
            .collect();
        let detail = json!({
            "hash": format!("0x{}", alloy_primitives::hex::encode(record.hash())),
            "record": serde_json::to_value(&record)?,
            "spans": spans,
        });
        Ok(Some((record, detail)))
    }
}

impl Attributor for NodeAttributor {
    fn attribute(&self, model: &str, completion: &[u32]) -> Option<Attributed> {
        match self.record(model, completion, &self.params) {
            Ok(Some((record, detail))) => Some(Attributed {
                record_hash: record.hash(),
                shares: record
                    .contributions
                    .iter()
                    .map(|c| (c.contribution_id, c.share_ppm))
                    .collect(),
                detail,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("attribution of a {model} completion failed: {e:#}");
                None
            }
        }
    }
}

/// The node's attributor, set once the base model has loaded.
pub type AttributorSlot = Arc<std::sync::OnceLock<Arc<NodeAttributor>>>;

#[derive(Clone)]
struct ApiState {
    attributor: AttributorSlot,
    serving: openlora::Slot,
}

fn attributor(state: &ApiState) -> Result<Arc<NodeAttributor>, Failure> {
    state.attributor.get().cloned().ok_or_else(|| {
        bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "the base model is still loading (or none is served); try again shortly".into(),
        )
    })
}

#[derive(serde::Deserialize)]
struct AttributeBody {
    model: String,
    /// The response as text (tokenized with the served model's tokenizer) …
    #[serde(default)]
    response: Option<String>,
    /// … or as token ids, exactly as generated.
    #[serde(default)]
    tokens: Option<Vec<u32>>,
    #[serde(default)]
    params: Option<SpanParams>,
    /// For verify: the record to check (a `span-v1` or `grad-datainf-v1` record).
    #[serde(default)]
    record: Option<Value>,
    /// `span` (default) or `gradient` (needs `prompt` and `response`).
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
}

/// An error answer of the attribution API.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"message": self.1, "type": "invalid_request_error"}})),
        )
            .into_response()
    }
}

fn bad(status: StatusCode, message: String) -> Failure {
    Failure(status, message)
}

/// The request's response tokens, or why there are none.
fn tokens(state: &ApiState, body: &AttributeBody) -> Result<Vec<u32>, Failure> {
    if let Some(tokens) = &body.tokens {
        return Ok(tokens.clone());
    }
    let Some(text) = &body.response else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "give the response as \"response\" (text) or \"tokens\" (ids)".into(),
        ));
    };
    let Some(serving) = state.serving.get() else {
        return Err(bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "the base model is still loading; try again shortly".into(),
        ));
    };
    serving
        .engine
        .model()
        .tokenizer
        .encode(text)
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn create(
    State(state): State<ApiState>,
    Json(body): Json<AttributeBody>,
) -> Result<Response, Failure> {
    let attributor = attributor(&state)?;
    if body.method.as_deref() == Some("gradient") {
        let (Some(prompt), Some(response)) = (body.prompt.clone(), body.response.clone()) else {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "the gradient method needs \"prompt\" and \"response\" as text".into(),
            ));
        };
        let model = body.model.clone();
        let out = tokio::task::spawn_blocking(move || {
            attributor.gradient_record(&model, &prompt, &response, 0.1, 16)
        })
        .await;
        return match out {
            Ok(Ok(Some((_, detail)))) => Ok(Json(detail).into_response()),
            Ok(Ok(None)) => Err(bad(
                StatusCode::NOT_FOUND,
                format!("model {:?} was not fine-tuned here", body.model),
            )),
            Ok(Err(e)) => Err(bad(StatusCode::BAD_REQUEST, format!("{e:#}"))),
            Err(e) => Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        };
    }
    if let Some(method) = body.method.as_deref().filter(|m| *m != "span") {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("unknown method {method:?}: use span or gradient"),
        ));
    }
    let tokens = tokens(&state, &body)?;
    let params = body.params.unwrap_or(attributor.params);
    let model = body.model.clone();
    let out =
        tokio::task::spawn_blocking(move || attributor.record(&model, &tokens, &params)).await;
    match out {
        Ok(Ok(Some((_, detail)))) => Ok(Json(detail).into_response()),
        Ok(Ok(None)) => Err(bad(
            StatusCode::NOT_FOUND,
            format!(
                "model {:?} has no attribution index here (only fine-tunes this node trained have one)",
                body.model
            ),
        )),
        Ok(Err(e)) => Err(bad(StatusCode::BAD_REQUEST, format!("{e:#}"))),
        Err(e) => Err(bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// A record computed again: as JSON, the claimed record's hash and the new one's.
type Recomputed = (Value, [u8; 32], [u8; 32]);

async fn verify(
    State(state): State<ApiState>,
    Json(body): Json<AttributeBody>,
) -> Result<Response, Failure> {
    let Some(claimed) = body.record.clone() else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "give the \"record\" to verify".into(),
        ));
    };
    let attributor = attributor(&state)?;
    let model = body.model.clone();
    let unreadable = |e: serde_json::Error| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("the record is not readable: {e}"),
        )
    };
    // Each method recomputes its own record; `None` means the model is not attributable here.
    let recomputed: Result<Option<Recomputed>> = match claimed["method"].as_str() {
        Some(openledger_attribution::METHOD_GRADIENT_DATAINF_V1) => {
            let claimed: GradientRecord = serde_json::from_value(claimed).map_err(unreadable)?;
            let (Some(prompt), Some(response)) = (body.prompt.clone(), body.response.clone())
            else {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    "a gradient record is verified from \"prompt\" and \"response\"".into(),
                ));
            };
            let params = claimed.params;
            tokio::task::spawn_blocking(move || {
                attributor
                    .gradient_record(&model, &prompt, &response, params.damping, params.top_k)
                    .map(|found| {
                        found.map(|(again, _)| {
                            let value = serde_json::to_value(&again).unwrap_or(Value::Null);
                            (value, claimed.hash(), again.hash())
                        })
                    })
            })
            .await
            .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
        _ => {
            let claimed: AttributionRecord = serde_json::from_value(claimed).map_err(unreadable)?;
            let tokens = tokens(&state, &body)?;
            let params = claimed.params;
            tokio::task::spawn_blocking(move || {
                attributor.record(&model, &tokens, &params).map(|found| {
                    found.map(|(again, _)| {
                        let value = serde_json::to_value(&again).unwrap_or(Value::Null);
                        (value, claimed.hash(), again.hash())
                    })
                })
            })
            .await
            .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    match recomputed {
        Ok(Some((again, claimed_hash, again_hash))) => Ok(Json(json!({
            "matches": claimed_hash == again_hash,
            "claimed_hash": format!("0x{}", alloy_primitives::hex::encode(claimed_hash)),
            "recomputed_hash": format!("0x{}", alloy_primitives::hex::encode(again_hash)),
            "recomputed": again,
        }))
        .into_response()),
        Ok(None) => Err(bad(
            StatusCode::NOT_FOUND,
            format!("model {:?} has no attribution data here", body.model),
        )),
        Err(e) => Err(bad(StatusCode::BAD_REQUEST, format!("{e:#}"))),
    }
}

pub fn router(attributor: AttributorSlot, serving: openlora::Slot) -> axum::Router {
    axum::Router::new()
        .route("/v1/attribution", axum::routing::post(create))
        .route("/v1/attribution/verify", axum::routing::post(verify))
        .with_state(ApiState {
            attributor,
            serving,
        })
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AttributeArgs {
    #[command(subcommand)]
    pub command: Option<AttributeCommand>,
    #[command(flatten)]
    pub request: AttributeRequest,
}

#[derive(Args, Debug, Clone)]
pub struct AttributeRequest {
    /// The served fine-tune (a job's name or `model-{id}`).
    #[arg(long, default_value = "")]
    pub model: String,
    /// The response to attribute, as text.
    #[arg(long)]
    pub response: Option<String>,
    /// Or: ask the model this and attribute its answer.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Shortest span kept, in tokens (span method).
    #[arg(long)]
    pub min_len: Option<u32>,
    /// `span` (suffix-array matches, any response) or `gradient` (LoRA gradient influence;
    /// needs --prompt and --response).
    #[arg(long, default_value = "span")]
    pub method: String,
    /// The node's API.
    #[arg(
        long,
        env = "OPENLEDGER_API",
        default_value = "http://127.0.0.1:8550",
        global = true
    )]
    pub api: String,
}

#[derive(Subcommand, Debug)]
pub enum AttributeCommand {
    /// Recompute a record (a JSON file from `openledger attribute`) and say whether it matches.
    Verify {
        /// The record, as `openledger attribute` printed it (its "record" field, or whole).
        record: std::path::PathBuf,
        #[command(flatten)]
        request: AttributeRequest,
    },
}

/// A POST to the node's API, answered with JSON (errors carry the API's message).
fn post_json(api: &str, path: &str, body: &Value) -> Result<Value> {
    crate::datanet::Api::new(api).post("attribution", path, body.clone())
}

fn params_json(request: &AttributeRequest) -> Value {
    match request.min_len {
        Some(min_len) => json!(SpanParams {
            min_len,
            ..SpanParams::default()
        }),
        None => Value::Null,
    }
}

pub fn run(args: AttributeArgs) -> Result<()> {
    match args.command {
        None => {
            let r = &args.request;
            if r.model.is_empty() {
                bail!("--model is required: the fine-tune whose answer to attribute");
            }
            let detail = match (&r.response, &r.prompt) {
                (Some(response), Some(prompt)) if r.method == "gradient" => post_json(
                    &r.api,
                    "/v1/attribution",
                    &json!({"model": r.model, "method": "gradient", "prompt": prompt, "response": response}),
                )?,
                _ if r.method == "gradient" => {
                    bail!("the gradient method needs --prompt and --response")
                }
                (Some(response), _) => post_json(
                    &r.api,
                    "/v1/attribution",
                    &json!({"model": r.model, "response": response, "params": params_json(r)}),
                )?,
                (None, Some(prompt)) => {
                    let answer = post_json(
                        &r.api,
                        "/v1/chat/completions",
                        &json!({"model": r.model, "messages": [{"role": "user", "content": prompt}],
                                "temperature": 0, "max_tokens": 128, "attribution": true}),
                    )?;
                    eprintln!(
                        "answer: {}",
                        answer["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap_or("")
                    );
                    answer["attribution"].clone()
                }
                (None, None) => bail!("give --response TEXT, or --prompt TEXT to ask the model"),
            };
            if detail.is_null() {
                bail!("the node returned no attribution for {}", r.model);
            }
            for c in detail["record"]["contributions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                // Span records list objects, gradient records (id, ppm) pairs.
                let (id, ppm) = match &c {
                    Value::Array(pair) => (pair[0].clone(), pair[1].clone()),
                    _ => (c["contribution_id"].clone(), c["share_ppm"].clone()),
                };
                eprintln!("contribution {id:>6}  {ppm:>9} ppm");
            }
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        Some(AttributeCommand::Verify { record, request }) => {
            let text = std::fs::read_to_string(&record)
                .with_context(|| format!("cannot read {}", record.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", record.display()))?;
            let claimed = if value.get("record").is_some() {
                value["record"].clone()
            } else {
                value
            };
            let Some(response) = &request.response else {
                bail!(
                    "give --response TEXT: the response the record is about (and --prompt for a gradient record)"
                );
            };
            let answer = post_json(
                &request.api,
                "/v1/attribution/verify",
                &json!({"model": request.model, "prompt": request.prompt, "response": response, "record": claimed}),
            )?;
            if answer["matches"].as_bool() == Some(true) {
                println!(
                    "the record matches: {}",
                    answer["recomputed_hash"].as_str().unwrap_or("")
                );
            } else {
                bail!(
                    "the record does not match: claimed {}, recomputed {}",
                    answer["claimed_hash"].as_str().unwrap_or("?"),
                    answer["recomputed_hash"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}
