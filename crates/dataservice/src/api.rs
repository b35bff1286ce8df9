//! The data service's HTTP API (JSON over HTTP, under `/v1`).
//!
//! | method + path                                   | what                                         |
//! |-------------------------------------------------|----------------------------------------------|
//! | `POST /v1/descriptions`                         | store a description document → its hash      |
//! | `GET  /v1/datanets/{id}`                        | on-chain record + description                |
//! | `POST /v1/datanets/{id}/uploads`                | start an upload → `upload_id`                |
//! | `PUT  /v1/uploads/{upload}/files/{name}`        | stream one file in (JSONL/CSV/Parquet/txt/md) → report |
//! | `POST /v1/uploads/{upload}/seal`                | seal → content root, rows, bytes for `contribute` |
//! | `DELETE /v1/uploads/{upload}`                   | drop an unsealed upload                      |
//! | `GET  /v1/contributions/{id}`                   | on-chain record + this node's report          |
//! | `POST /v1/datanets/{id}/snapshots`              | build the snapshot of accepted rows → root for `publishSnapshot` |
//! | `GET  /v1/snapshots/{id}`                       | snapshot record *(read)*                     |
//! | `GET  /v1/snapshots/{id}/rows?offset=&limit=`   | rows with credit *(read)*                    |
//! | `GET  /v1/snapshots/{id}/rows/{hash}`           | one row *(read)*                             |
//! | `GET  /v1/snapshots/{id}/proof/{hash}`          | inclusion proof against the on-chain root *(read)* |
//! | `GET  /v1/snapshots/{id}/export/{file}`         | `rows.jsonl`, `rows.parquet`, `README.md`, `card.json` *(read)* |
//!
//! *(read)* routes of a permissioned datanet need a signed request ([`crate::auth`]) from the
//! owner, a curator or an account with an unexpired grant. Errors are
//! `{"error": {"code": …, "message": …}}` with a fitting HTTP status.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use futures::StreamExt;
use openledger_primitives::B256;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::auth::{self, AuthError, SignedHeaders};
use crate::service::{DataService, Description, ServiceError};

/// The API's routes over `service`.
pub fn router(service: DataService) -> Router {
    Router::new()
        .route("/v1/descriptions", post(put_description))
        .route("/v1/datanets/{id}", get(get_datanet))
        .route("/v1/datanets/{id}/uploads", post(begin_upload))
        .route(
            "/v1/uploads/{upload}/files/{*name}",
            put(upload_file).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/uploads/{upload}/seal", post(seal))
        .route("/v1/uploads/{upload}", delete(abort))
        .route("/v1/contributions/{id}", get(get_contribution))
        .route("/v1/datanets/{id}/snapshots", post(build_snapshot))
        .route("/v1/snapshots/{id}", get(get_snapshot))
        .route("/v1/snapshots/{id}/rows", get(snapshot_rows))
        .route("/v1/snapshots/{id}/rows/{hash}", get(snapshot_row))
        .route("/v1/snapshots/{id}/proof/{hash}", get(proof))
        .route("/v1/snapshots/{id}/export/{file}", get(export_file))
        .with_state(service)
}

/// An API error: status, stable code and a message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use ServiceError as E;
        let (status, code) = match &e {
            E::UnknownDatanet(_) => (StatusCode::NOT_FOUND, "unknown_datanet"),
            E::UnknownSnapshot(_) => (StatusCode::NOT_FOUND, "unknown_snapshot"),
            E::UnknownContribution(_) => (StatusCode::NOT_FOUND, "unknown_contribution"),
            E::UnknownUpload(_) => (StatusCode::NOT_FOUND, "unknown_upload"),
            E::RowNotInSnapshot { .. } => (StatusCode::NOT_FOUND, "row_not_in_snapshot"),
            E::DatanetClosed(_) => (StatusCode::CONFLICT, "datanet_closed"),
            E::AlreadySealed(_) => (StatusCode::CONFLICT, "already_sealed"),
            E::NothingAccepted(_) => (StatusCode::UNPROCESSABLE_ENTITY, "nothing_accepted"),
            E::EmptySnapshot => (StatusCode::CONFLICT, "empty_snapshot"),
            E::MissingRows { .. } => (StatusCode::CONFLICT, "missing_rows"),
            E::SnapshotNotBuilt(_) => (StatusCode::CONFLICT, "snapshot_not_built"),
            E::Ingest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unreadable_file"),
            E::Ledger(_) => (StatusCode::BAD_GATEWAY, "chain_unavailable"),
            E::Blob(_) | E::Storage(_) | E::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        let details = match &e {
            E::NothingAccepted(report) => serde_json::to_value(report).ok(),
            _ => None,
        };
        Self {
            status,
            code,
            message: e.to_string(),
            details,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// Runs blocking service work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn parse_hash(text: &str) -> Result<B256, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hash",
            format!("{text:?} is not a 32-byte hex hash (0x followed by 64 hex digits)"),
        )
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses a read of published snapshot `snapshot_id` unless its datanet is public or the
/// request is signed by someone who may read it.
async fn authorize_read(
    service: &DataService,
    snapshot_id: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let datanet_id = snapshot_datanet(service, snapshot_id).await?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let signer = auth::verify(
        method.as_str(),
        path,
        &SignedHeaders {
            address: header(auth::ADDRESS_HEADER),
            expires: header(auth::EXPIRES_HEADER),
            signature: header(auth::SIGNATURE_HEADER),
        },
        now(),
    )?;
    let svc = service.clone();
    if blocking(move || svc.may_read(datanet_id, signer)).await? {
        return Ok(());
    }
    Err(match signer {
        None => AuthError::Missing.into(),
        Some(who) => ApiError::new(
            StatusCode::FORBIDDEN,
            "no_grant",
            format!(
                "{who} holds no unexpired grant for datanet {datanet_id}; request access (`openledger datanet request-access`) and ask the owner to grant it"
            ),
        ),
    })
}

async fn put_description(
    State(service): State<DataService>,
    Json(description): Json<Description>,
) -> ApiResult {
    let hash = blocking(move || service.put_description(&description)).await?;
    ok(json!({ "description_hash": hash }))
}

async fn get_datanet(State(service): State<DataService>, Path(id): Path<u64>) -> ApiResult {
    let (datanet, description) = blocking(move || {
        let d = service.datanet(id)?;
        let description = service.description(&d);
        Ok((d, description))
    })
    .await?;
    ok(json!({ "datanet": datanet, "description": description }))
}

async fn begin_upload(State(service): State<DataService>, Path(id): Path<u64>) -> ApiResult {
    let upload = blocking(move || service.begin_upload(id)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "upload_id": upload }))).into_response())
}

async fn upload_file(
    State(service): State<DataService>,
    Path((upload, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let svc = service.clone();
    let (u, n) = (upload.clone(), name.clone());
    let staged = blocking(move || svc.staging_file(&u, &n)).await?;
    let write_error = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("cannot stage the upload: {e}"),
        )
    };
    let mut file = tokio::fs::File::create(&staged)
        .await
        .map_err(write_error)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                format!(
                    "the upload of {name} broke off ({e}); nothing of it was kept — send it again"
                ),
            )
        })?;
        file.write_all(&chunk).await.map_err(write_error)?;
    }
    file.flush().await.map_err(write_error)?;
    drop(file);
    let report = blocking(move || {
        let report = service.ingest_file(&upload, &staged, &name);
        let _ = std::fs::remove_file(&staged);
        report
    })
    .await?;
    ok(report)
}

async fn seal(State(service): State<DataService>, Path(upload): Path<String>) -> ApiResult {
    let record = blocking(move || service.seal(&upload)).await?;
    ok(record)
}

async fn abort(State(service): State<DataService>, Path(upload): Path<String>) -> ApiResult {
    service.abort(&upload);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_contribution(State(service): State<DataService>, Path(id): Path<u64>) -> ApiResult {
    let (info, record) = blocking(move || service.contribution(id)).await?;
    ok(json!({ "contribution": info, "record": record }))
}

async fn build_snapshot(State(service): State<DataService>, Path(id): Path<u64>) -> ApiResult {
    let draft = blocking(move || service.build_snapshot(id)).await?;
    ok(draft)
}

/// The datanet a published snapshot belongs to (for the access check).
async fn snapshot_datanet(service: &DataService, id: u64) -> Result<u64, ApiError> {
    let svc = service.clone();
    blocking(move || {
        svc.ledger()
            .snapshot(id)?
            .map(|s| s.datanet_id)
            .ok_or(ServiceError::UnknownSnapshot(id))
    })
    .await
}

async fn get_snapshot(
    State(service): State<DataService>,
    Path(id): Path<u64>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&service, id, &method, &uri, &headers).await?;
    let (info, record) = blocking(move || service.snapshot(id)).await?;
    ok(json!({ "snapshot": info, "record": record }))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn snapshot_rows(
    State(service): State<DataService>,
    Path(id): Path<u64>,
    Query(page): Query<Page>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    authorize_read(&service, id, &method, &uri, &headers).await?;
    let limit = page.limit.min(1000);
    let rows = blocking(move || service.snapshot_rows(id, page.offset, limit)).await?;
    ok(json!({ "offset": page.offset, "rows": rows }))
}

async fn snapshot_row(
    State(service): State<DataService>,
    Path((id, hash)): Path<(u64, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let hash = parse_hash(&hash)?;
    authorize_read(&service, id, &method, &uri, &headers).await?;
    let row = blocking(move || service.snapshot_row(id, hash)).await?;
    ok(row)
}

async fn proof(
    State(service): State<DataService>,
    Path((id, hash)): Path<(u64, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let hash = parse_hash(&hash)?;
    authorize_read(&service, id, &method, &uri, &headers).await?;
    let proof = blocking(move || service.prove(id, hash)).await?;
    ok(json!({ "snapshot_id": id, "proof": proof }))
}

async fn export_file(
    State(service): State<DataService>,
    Path((id, file)): Path<(u64, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult {
    let content_type = match file.as_str() {
        "rows.jsonl" => "application/jsonl",
        "rows.parquet" => "application/vnd.apache.parquet",
        "README.md" => "text/markdown; charset=utf-8",
        "card.json" => "application/json",
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_export_file",
                format!(
                    "{file:?} is not an export file; use rows.jsonl, rows.parquet, README.md or card.json"
                ),
            ));
        }
    };
    authorize_read(&service, id, &method, &uri, &headers).await?;
    let dir = blocking(move || service.export(id)).await?;
    let f = tokio::fs::File::open(dir.join(&file))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let body = Body::from_stream(tokio_util_stream(f));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// A file as a stream of chunks, so exports of any size are sent without loading them.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}
