//! The HTTP API of `weir serve` (JSON; every route is in the README): pipelines submitted,
//! listed, shown, stopped and restarted, read-only batch queries over the lake (JSON rows or
//! Arrow IPC), `/metrics` for Prometheus, and the live page at `/`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use super::registry::{Registry, SubmittedFile};
use crate::commands::{query_batches, CliError};

/// What every handler shares.
pub struct AppState {
    /// The server's pipelines.
    pub registry: Registry,
    /// The lake the queries read.
    pub lake: std::path::PathBuf,
    /// Every request but the page's own must carry `Authorization: Bearer <token>` when set.
    pub token: Arc<Option<String>>,
    /// The Prometheus exporter `/metrics` renders.
    pub metrics: PrometheusHandle,
}

/// The routes: the API and `/metrics` behind the token, the page (which holds no data and
/// asks for the token) without it.
pub fn router(state: Arc<AppState>) -> Router {
    let token = state.token.clone();
    let api = Router::new()
        .route("/api/pipelines", get(list).post(submit))
        .route("/api/pipelines/{name}", get(show))
        .route("/api/pipelines/{name}/stop", post(stop))
        .route("/api/pipelines/{name}/restart", post(restart))
        .route("/api/query", post(query))
        .with_state(state.clone())
        .route(
            "/metrics",
            get(super::metrics::render).with_state(state.metrics.clone()),
        )
        .layer(axum::middleware::from_fn(move |request, next| {
            check_token(token.clone(), request, next)
        }));
    Router::new()
        .route("/", get(super::page::page))
        .route("/api/session", get(session).with_state(state.token.clone()))
        .merge(api)
}

/// Whether the server needs a token and whether the request carries it: the page asks for
/// the token only when it must, without a failed request.
async fn session(State(token): State<Arc<Option<String>>>, headers: HeaderMap) -> Response {
    let required = token.is_some();
    let ok = token.as_deref().is_none_or(|t| bearer(&headers) == Some(t));
    Json(json!({ "token_required": required, "token_ok": ok })).into_response()
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// 401 for a request without `token` (when there is one) as `Authorization: Bearer`.
pub async fn check_token(
    token: Arc<Option<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = token.as_ref() {
        if bearer(request.headers()) != Some(token.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: set WEIR_TOKEN to it".to_string(),
            );
        }
    }
    next.run(request).await
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A command error as a response: the user's mistakes are 400, the rest 500.
fn failed(e: CliError) -> Response {
    let status = match e {
        CliError::Sql(_) | CliError::NotReadOnly { .. } | CliError::Usage(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // The text without the CLI's `error: ` prefix (SQL errors carry their own).
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
    error(status, text)
}

fn not_found(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no pipeline `{name}`"))
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({ "pipelines": state.registry.list().await })).into_response()
}

/// The body of a submission.
#[derive(Deserialize)]
struct Submission {
    name: String,
    files: Vec<SubmittedFile>,
}

async fn submit(State(state): State<Arc<AppState>>, Json(body): Json<Submission>) -> Response {
    match state.registry.submit(&body.name, body.files).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({ "name": body.name, "state": "starting" })),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

async fn show(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.show(&name).await {
        Some(detail) => Json(detail).into_response(),
        None => not_found(&name),
    }
}

async fn stop(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.stop(&name).await {
        Ok(true) => Json(json!({ "name": name, "state": "stopping" })).into_response(),
        Ok(false) => not_found(&name),
        Err(e) => failed(e),
    }
}

async fn restart(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.restart(&name).await {
        Ok(true) => Json(json!({ "name": name, "state": "starting" })).into_response(),
        Ok(false) => not_found(&name),
        Err(e) => failed(e),
    }
}

/// The body of a query.
#[derive(Deserialize)]
struct Query {
    sql: String,
}

/// The media type of an Arrow IPC stream, which a query answers in when asked by `Accept`.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<Query>,
) -> Response {
    let (schema, batches) = match query_batches(&body.sql, &state.lake).await {
        Ok(answer) => answer,
        Err(e) => return failed(e),
    };
    let wants_arrow = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    if wants_arrow {
        return arrow_answer(&schema, &batches);
    }
    json_answer(&schema, &batches)
}

/// The rows as an Arrow IPC stream (the schema, then the batches).
fn arrow_answer(schema: &SchemaRef, batches: &[arrow::array::RecordBatch]) -> Response {
    let mut out = Vec::new();
    let written = (|| {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()
    })();
    match written {
        Ok(()) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, ARROW_STREAM)],
            out,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The rows as `{"columns": [...], "rows": [{column: value}, ...]}`.
fn json_answer(schema: &SchemaRef, batches: &[arrow::array::RecordBatch]) -> Response {
    let mut out = Vec::new();
    let columns: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut out);
        for batch in batches {
            if let Err(e) = writer.write(batch) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
        }
        if let Err(e) = writer.finish() {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    }
    let rows: serde_json::Value = if out.is_empty() {
        json!([])
    } else {
        serde_json::from_slice(&out).unwrap_or_else(|_| json!([]))
    };
    Json(json!({ "columns": columns, "rows": rows })).into_response()
}
