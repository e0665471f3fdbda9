//! `weir serve`: one process running any number of pipelines on one runtime, each with its
//! own checkpoint, controlled over an HTTP API (`routes.rs`) by the `weir submit / list /
//! show / stop / restart / logs / query --server` commands (`client.rs`). Pipelines are kept
//! in the state folder (`registry.rs`) and resumed when the server starts again.

pub mod client;
pub mod metrics;
mod page;
mod pg_wire;
mod recent;
mod registry;
mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::commands::CliError;

/// The address `weir serve` listens on, and the commands talk to, by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Arguments of `weir serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Any address other than loopback needs a token.
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Folder that holds the tables (and the pipelines' checkpoints).
    #[arg(long, default_value = "lake", env = "WEIR_LAKE")]
    pub lake: PathBuf,
    /// Folder where the server keeps the submitted pipelines.
    #[arg(long, default_value = "weir-state")]
    pub state: PathBuf,
    /// A file holding the token every request must carry (also `WEIR_TOKEN`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Also serve the lake, read only, over the PostgreSQL wire protocol on this address, for
    /// psql, DBeaver, Grafana and dbt (with a token, clients give it as their password).
    #[arg(long)]
    pub pg_addr: Option<SocketAddr>,
}

/// The token from `--token-file` or `WEIR_TOKEN`.
fn read_token(file: Option<&Path>) -> Result<Option<String>, CliError> {
    let token = match file {
        Some(path) => Some(std::fs::read_to_string(path)?.trim().to_string()),
        None => std::env::var("WEIR_TOKEN").ok(),
    };
    Ok(token.filter(|t| !t.is_empty()))
}

/// Runs the server until Ctrl-C or SIGTERM, then stops every pipeline after its current
/// epoch (they resume when the server starts again).
pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let token = read_token(args.token_file.as_deref())?;
    if !args.addr.ip().is_loopback() && token.is_none() {
        return Err(CliError::Usage(format!(
            "weir serve on {} (not loopback) needs a token: set WEIR_TOKEN or --token-file; \
             without one, bind to 127.0.0.1",
            args.addr
        )));
    }
    let registry = registry::Registry::new(&args.lake, &args.state)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let bound = listener.local_addr()?;
    if let Some(pg_addr) = args.pg_addr {
        pg_wire::spawn(pg_addr, args.lake.clone(), token.clone()).await?;
    }
    registry.resume().await?;
    let state = Arc::new(routes::AppState {
        registry,
        lake: args.lake.clone(),
        token: Arc::new(token),
        metrics: metrics::exporter()?,
    });
    errln!(
        "weir serve: listening on http://{bound} (lake {}, state {})",
        args.lake.display(),
        args.state.display()
    );
    axum::serve(listener, routes::router(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    errln!("weir serve: stopping the pipelines after their current epoch");
    state.registry.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    match term.as_mut() {
        Some(term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
