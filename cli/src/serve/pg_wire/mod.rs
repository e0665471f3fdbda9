//! `weir serve --pg-addr ADDR`: the lake over the PostgreSQL wire protocol (the
//! `datafusion-postgres` crate over pgwire), read only, so psql, DBeaver, Grafana and dbt's
//! postgres adapter query Weir's tables as they are (`silver.events` is table `events` of
//! schema `silver`). Every query first reloads the lake's tables, so it sees every epoch
//! committed before it; anything but a read or a client's session statement is refused with
//! SQLSTATE 25006 (read-only transaction). Who may connect is `auth.rs`.

mod auth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{DfSessionService, QueryHook, ServerOptions};

use crate::commands::{query_session, CliError};
use crate::read_only::{is_read, is_session_statement, statement_kind};

/// Starts serving the lake on `addr`. With `token`, a client's password must be the token;
/// off loopback a token is required.
pub async fn spawn(addr: SocketAddr, lake: PathBuf, token: Option<String>) -> Result<(), CliError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(CliError::Usage(format!(
            "--pg-addr {addr} (not loopback) needs a token: set WEIR_TOKEN or --token-file \
             (clients give it as their password); without one, bind to 127.0.0.1"
        )));
    }
    // Found busy now rather than in a log line later.
    drop(
        std::net::TcpListener::bind(addr)
            .map_err(|e| CliError::Usage(format!("cannot listen on --pg-addr {addr}: {e}")))?,
    );
    let ctx = query_session();
    weir_lakehouse::register_lake(&ctx, &lake).await?;
    setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
        .map_err(|e| CliError::Usage(format!("cannot set up pg_catalog: {e}")))?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnlyLake { lake }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let options = ServerOptions::new()
        .with_host(addr.ip().to_string())
        .with_port(addr.port());
    let service = DfSessionService::new_with_hooks(Arc::new(ctx), hooks);
    let handlers = Arc::new(auth::LakeHandlers::new(service, token));
    tokio::spawn(async move {
        if let Err(e) = datafusion_postgres::serve_with_handlers(handlers, &options).await {
            tracing::error!("the PostgreSQL endpoint on {addr} stopped: {e}");
        }
    });
    errln!(
        "weir serve: PostgreSQL wire protocol on {addr} (read only; psql -h {} -p {})",
        addr.ip(),
        addr.port()
    );
    Ok(())
}

/// The first hook of every statement: refuses what is not a read, and reloads the lake's
/// tables before a read so it sees the latest committed epochs (and tables created since).
struct ReadOnlyLake {
    lake: PathBuf,
}

impl ReadOnlyLake {
    /// `Some(error)` for a statement that is refused; reloads the lake before a read.
    async fn check(&self, statement: &Statement, ctx: &SessionContext) -> Option<PgWireError> {
        if is_session_statement(statement) {
            return None;
        }
        if !is_read(statement) {
            return Some(user_error(
                "25006",
                format!(
                    "{} is refused: Weir serves the lake read only (tables are written by \
                     pipelines only)",
                    statement_kind(statement)
                ),
            ));
        }
        match weir_lakehouse::register_lake(ctx, &self.lake).await {
            Ok(_) => None,
            Err(e) => Some(user_error("58030", format!("cannot read the lake: {e}"))),
        }
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

#[async_trait]
impl QueryHook for ReadOnlyLake {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, session_context).await.map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.check(statement, session_context).await.map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}
