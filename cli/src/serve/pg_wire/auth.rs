//! Who may connect to the PostgreSQL endpoint: on loopback without a token anyone (as the HTTP
//! API); with the server's token, a client whose password is that token (cleartext password
//! authentication, as `PGPASSWORD=$WEIR_TOKEN psql ...` sends it; any user name).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::DfSessionService;
use futures::Sink;

/// The handlers of every connection: the lake's query service behind the startup check.
pub struct LakeHandlers {
    service: Arc<DfSessionService>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl LakeHandlers {
    /// Connections to `service`, each checked for `token` (when there is one).
    pub fn new(service: DfSessionService, token: Option<String>) -> LakeHandlers {
        let connections = Arc::new(ConnectionManager::new());
        let startup = match token {
            None => Startup::Open(Open(connections.clone())),
            Some(token) => Startup::Token(Box::new(
                CleartextPasswordAuthStartupHandler::new(
                    TokenSource(token),
                    DefaultServerParameterProvider::default(),
                )
                .with_connection_manager(connections.clone()),
            )),
        };
        LakeHandlers {
            service: Arc::new(service),
            startup: Arc::new(startup),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

impl PgWireServerHandlers for LakeHandlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// How a connection starts: open, or with the token as its password.
pub enum Startup {
    /// No token: anyone on loopback.
    Open(Open),
    /// The password must be the token.
    Token(Box<CleartextPasswordAuthStartupHandler<TokenSource, DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(open) => open.on_startup(client, message).await,
            Startup::Token(checked) => checked.on_startup(client, message).await,
        }
    }
}

/// The startup of a server without a token: no password asked.
pub struct Open(Arc<ConnectionManager>);

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.0.clone())
    }
}

/// The server's token, as the one password.
#[derive(Debug)]
pub struct TokenSource(String);

#[async_trait]
impl AuthSource for TokenSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }
}
