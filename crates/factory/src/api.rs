//! The jobs HTTP API, under `/v1`:
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/jobs` | queue a job (signed by its owner) → 201 + record |
//! | GET | `/jobs`, `/jobs/{id}` | records: status, progress, evals, result |
//! | POST | `/jobs/{id}/cancel`, `/jobs/{id}/resume` | by the owner (signed) |
//! | GET | `/jobs/{id}/events` | server-sent events: history, then live until the job ends |
//! | GET | `/jobs/{id}/adapter/{file}` | the PEFT files of a finished job |
//! | GET | `/artifacts/{hash}` | a stored artifact (adapter weights, manifest, row list) |
//!
//! Writes are signed like the data API's reads (EIP-191, [`openledger_dataservice::auth`]),
//! over [`signed_target`]: the path plus the BLAKE3 of the body, so a captured signature
//! cannot carry another job spec.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use openledger_dataservice::auth::{self, SignedHeaders};
use serde_json::json;

use crate::FactoryError;
use crate::jobs::{Factory, JobEvent, JobSpec};

/// What a write request's signature covers: its path and the hash of its body.
pub fn signed_target(path: &str, body: &[u8]) -> String {
    format!("{path}#{}", blake3::hash(body).to_hex())
}

pub fn router(factory: Factory) -> Router {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/resume", post(resume))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/adapter/{file}", get(adapter_file))
        .route("/v1/artifacts/{hash}", get(artifact))
        .with_state(factory)
}

struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<FactoryError> for ApiError {
    fn from(e: FactoryError) -> Self {
        use FactoryError as E;
        let (status, code) = match &e {
            E::BadRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"),
            E::UnknownJob(_) => (StatusCode::NOT_FOUND, "unknown_job"),
            E::UnknownSnapshot(_) => (StatusCode::NOT_FOUND, "unknown_snapshot"),
            E::UnknownBaseModel(_) => (StatusCode::NOT_FOUND, "unknown_base_model"),
            E::NoGrant { .. } => (StatusCode::FORBIDDEN, "no_grant"),
            E::NotOwner { .. } => (StatusCode::FORBIDDEN, "not_owner"),
            E::WrongState { .. } => (StatusCode::CONFLICT, "wrong_state"),
            E::Model(openledger_llm::LlmError::BadInput(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "bad_request")
            }
            E::Model(_) => (StatusCode::UNPROCESSABLE_ENTITY, "model"),
            E::Data(_) => (StatusCode::BAD_GATEWAY, "data_service"),
            E::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

fn bad(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

type ApiResult = Result<Response, ApiError>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FactoryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// The signer of a write request, which must be signed.
fn signer(path: &str, headers: &HeaderMap, body: &[u8]) -> Result<Address, ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let unauthorized = |message: String| bad(StatusCode::UNAUTHORIZED, "unauthorized", message);
    auth::verify(
        "POST",
        &signed_target(path, body),
        &SignedHeaders {
            address: header(auth::ADDRESS_HEADER),
            expires: header(auth::EXPIRES_HEADER),
            signature: header(auth::SIGNATURE_HEADER),
        },
        now,
    )
    .map_err(|e| unauthorized(e.to_string()))?
    .ok_or_else(|| {
        unauthorized(format!(
            "sign the request as the job's owner (headers {}, {}, {} over the path and the BLAKE3 of the body; `openledger train` does it with --account or --private-key)",
            auth::ADDRESS_HEADER,
            auth::EXPIRES_HEADER,
            auth::SIGNATURE_HEADER
        ))
    })
}

async fn create(State(factory): State<Factory>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let owner = signer("/v1/jobs", &headers, &body)?;
    let spec: JobSpec = serde_json::from_slice(&body).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("job spec: {e}"),
        )
    })?;
    let record = blocking(move || factory.create(owner, spec)).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

async fn list(State(factory): State<Factory>) -> ApiResult {
    Ok(Json(json!({ "jobs": factory.list() })).into_response())
}

async fn show(State(factory): State<Factory>, Path(id): Path<u64>) -> ApiResult {
    Ok(Json(factory.get(id)?).into_response())
}

async fn cancel(
    State(factory): State<Factory>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = signer(&format!("/v1/jobs/{id}/cancel"), &headers, &body)?;
    Ok(Json(factory.cancel(id, who)?).into_response())
}

async fn resume(
    State(factory): State<Factory>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let who = signer(&format!("/v1/jobs/{id}/resume"), &headers, &body)?;
    Ok(Json(factory.resume(id, who)?).into_response())
}

fn is_end(event: &JobEvent) -> bool {
    event["kind"] == "status"
        && matches!(
            event["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
}

/// History first (after `Last-Event-ID` when a client reconnects), then live events, until
/// the job completes, fails or is cancelled.
async fn events(
    State(factory): State<Factory>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the history so nothing falls between the two.
    let mut live = factory.subscribe();
    let record = factory.get(id)?;
    let seen: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let history = {
        let f = factory.clone();
        blocking(move || f.history(id)).await?
    };
    let mut next = seen.map_or(0, |s| s + 1);
    let ended = record.status.is_terminal();
    // A task feeds the response through a channel; it ends when the client goes away.
    let (tx, rx) = tokio::sync::mpsc::channel::<JobEvent>(64);
    tokio::spawn(async move {
        for event in history {
            let seq = event["seq"].as_u64().unwrap_or(0);
            if seq < next {
                continue;
            }
            next = seq + 1;
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    let seq = event["seq"].as_u64().unwrap_or(0);
                    if event["job"].as_u64() != Some(id) || seq < next {
                        continue;
                    }
                    next = seq + 1;
                    let end = is_end(&event);
                    if tx.send(event).await.is_err() || end {
                        return;
                    }
                }
                // A slow client missed events; it can reconnect with Last-Event-ID.
                Err(_) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let sse = Event::default()
            .id(event["seq"].as_u64().unwrap_or(0).to_string())
            .event(event["kind"].as_str().unwrap_or("event"))
            .data(event.to_string());
        Some((Ok(sse), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn adapter_file(
    State(factory): State<Factory>,
    Path((id, file)): Path<(u64, String)>,
) -> ApiResult {
    let record = factory.get(id)?;
    if record.result.is_none() {
        return Err(bad(
            StatusCode::CONFLICT,
            "not_finished",
            format!("job {id} has no adapter yet (it is {:?})", record.status),
        ));
    }
    let content_type = match file.as_str() {
        "adapter_config.json" => "application/json",
        "adapter_model.safetensors" => "application/octet-stream",
        _ => {
            return Err(bad(
                StatusCode::NOT_FOUND,
                "unknown_file",
                "the adapter has adapter_config.json and adapter_model.safetensors",
            ));
        }
    };
    let path = factory.adapter_dir(id).join(&file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

async fn artifact(State(factory): State<Factory>, Path(hash): Path<String>) -> ApiResult {
    let hash: B256 = hash.parse().map_err(|_| {
        bad(
            StatusCode::BAD_REQUEST,
            "bad_hash",
            format!("{hash:?} is not a 32-byte hex hash"),
        )
    })?;
    let bytes = blocking(move || factory.artifact(&hash)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
