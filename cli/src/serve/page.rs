//! `GET /`: the live page of `weir serve`. One HTML file with its styles and script inline,
//! compiled into the binary (no build step, nothing fetched from elsewhere). It holds no data:
//! it polls the API every second (asking once for the token when the server has one) and
//! draws the pipelines, the selected pipeline's graph, and charts of its recent epochs.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The page, as shipped in the binary.
const PAGE: &str = include_str!("page.html");

/// The `/` handler.
pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}
