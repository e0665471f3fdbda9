//! The HTTP API of `weir serve` (JSON; every route is in the README): pipelines submitted,
//! listed, shown, stopped and restarted, and read-only batch queries over the lake.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    /// Every request must carry `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/pipelines", get(list).post(submit))
        .route("/api/pipelines/{name}", get(show))
        .route("/api/pipelines/{name}/stop", post(stop))
        .route("/api/pipelines/{name}/restart", post(restart))
        .route("/api/query", post(query))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

/// 401 for a request without the server's token (when it has one).
async fn require_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
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
        Some((view, lines)) => Json(json!({ "pipeline": view, "progress": lines })).into_response(),
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

async fn query(State(state): State<Arc<AppState>>, Json(body): Json<Query>) -> Response {
    let batches = match query_batches(&body.sql, &state.lake).await {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let mut out = Vec::new();
    let columns: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut out);
        for batch in &batches {
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
