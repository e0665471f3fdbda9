//! `GET /metrics`: the engine's metrics (`weir_engine::runtime::metrics`) in Prometheus text
//! format, for `weir serve` and for a plain `weir run --metrics-addr ADDR`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::commands::CliError;

/// Histogram buckets in seconds, for epoch and commit durations: from 5 ms to 2 minutes.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process's exporter, installed by the first caller of [`exporter`].
static EXPORTER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// The process's Prometheus exporter: installed as the global `metrics` recorder on first
/// use (with a task that compacts its histograms every few seconds), shared afterwards.
pub fn exporter() -> Result<PrometheusHandle, CliError> {
    let mut slot = EXPORTER
        .lock()
        .map_err(|_| CliError::Usage("the metrics exporter is unusable".into()))?;
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError::Usage(format!("cannot install the metrics exporter: {e}")))?;
    weir_engine::runtime::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    *slot = Some(handle.clone());
    Ok(handle)
}

/// The `/metrics` handler.
pub async fn render(State(handle): State<PrometheusHandle>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// `weir run --metrics-addr ADDR`: serves `/metrics` alone on `addr` while the run lasts.
/// Off loopback it needs a token (`WEIR_TOKEN`), as `weir serve` does.
pub async fn serve_for_run(addr: SocketAddr) -> Result<(), CliError> {
    let token = std::env::var("WEIR_TOKEN").ok().filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(CliError::Usage(format!(
            "--metrics-addr {addr} is not loopback: set WEIR_TOKEN (scrapers send it as a bearer \
             token), or bind to 127.0.0.1"
        )));
    }
    let handle = exporter()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on --metrics-addr {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let token = Arc::new(token);
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
        .layer(axum::middleware::from_fn(move |request, next| {
            super::routes::check_token(token.clone(), request, next)
        }));
    errln!("weir: metrics at http://{bound}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}
