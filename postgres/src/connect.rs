//! Reaching the server: the URL parsed once (and never printed: messages show host, port and
//! database only), connections opened with the same wait-and-retry as the Kafka source's
//! brokers, and which errors are worth a retry (the server is down, restarting or refused the
//! connection) and which are not (a bad column, a constraint).

use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::PostgresError;
use crate::tls::{is_tls_failure, split_tls_options};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A server and database, with credentials that stay out of every message.
#[derive(Clone)]
pub struct Server {
    config: Config,
    /// TLS as the URL's `sslmode` / `sslrootcert` say (see `tls`).
    connector: MakeRustlsConnect,
    /// `host:port/database`, for messages.
    place: String,
    /// How long an unreachable server is waited for before the run fails.
    pub timeout: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: only the place is shown.
        f.debug_struct("Server")
            .field("place", &self.place)
            .finish()
    }
}

impl Server {
    /// Parses a `postgres://user:password@host:port/database?sslmode=...` URL (or a
    /// `host=... dbname=...` key-value string), with libpq's `sslmode` and `sslrootcert`
    /// (see `tls`). The error names the option, never the URL.
    pub fn parse(url: &str, timeout: Duration) -> Result<Server, PostgresError> {
        let (rest, tls) = split_tls_options(url)?;
        let mut config = Config::from_str(&rest).map_err(|e| PostgresError::Url {
            reason: e.to_string(),
        })?;
        config.ssl_mode(tls.ssl_mode());
        let connector = tls.connector()?;
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let database = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        Ok(Server {
            place: format!("{host}:{port}/{database}"),
            config,
            connector,
            timeout,
        })
    }

    /// `host:port/database`.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// One connection attempt; the connection's driver runs on the current runtime.
    pub async fn connect_once(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.connector.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// A connection, waiting out a server that is down or restarting (doubling waits, at most
    /// `timeout` in all); `what` says what the connection is for, in log lines.
    pub async fn connect(&self, what: &str) -> Result<Client, PostgresError> {
        let mut retry = Retry::new(self.timeout);
        loop {
            match self.connect_once().await {
                Ok(client) => {
                    retry.resumed(&self.place);
                    return Ok(client);
                }
                Err(e) if is_transient(&e) => retry.wait(&self.place, what, e).await?,
                Err(e) => return Err(PostgresError::server(&self.place, what, e)),
            }
        }
    }
}

/// A [`Server::parse`] error as an error of the `url` option (its reason once, not prefixed
/// twice).
pub fn url_option_error(error: PostgresError) -> weir_engine::EngineError {
    match error {
        PostgresError::Url { reason } => weir_engine::EngineError::option("url", reason),
        other => weir_engine::EngineError::option("url", other.to_string()),
    }
}

/// Waits between attempts, with the Kafka source's log lines.
pub struct Retry {
    started: Instant,
    backoff: Duration,
    attempt: u32,
    timeout: Duration,
}

impl Retry {
    /// A first attempt.
    pub fn new(timeout: Duration) -> Self {
        Retry {
            started: Instant::now(),
            backoff: Duration::from_millis(250),
            attempt: 1,
            timeout,
        }
    }

    /// After a failed attempt at `what`: sleeps before the next one, or gives up with an error
    /// once the next wait would pass `server_timeout`.
    pub async fn wait(
        &mut self,
        place: &str,
        what: &str,
        error: tokio_postgres::Error,
    ) -> Result<(), PostgresError> {
        if self.started.elapsed() + self.backoff > self.timeout {
            return Err(PostgresError::Unreachable {
                place: place.to_string(),
                what: what.to_string(),
                seconds: self.started.elapsed().as_secs(),
                source: error,
            });
        }
        tracing::warn!(
            error = %error,
            "PostgreSQL server {place} unreachable: waiting to {what} (attempt {}, next in \
             {:.1}s, giving up after server_timeout = {}s)",
            self.attempt,
            self.backoff.as_secs_f64(),
            self.timeout.as_secs()
        );
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.attempt += 1;
        Ok(())
    }

    /// After a successful attempt: says so if earlier ones failed.
    pub fn resumed(&self, place: &str) {
        if self.attempt > 1 {
            tracing::info!(
                "PostgreSQL server {place} answers again after {:.0}s; resuming",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Whether `error` means the server was away (not reachable, shutting down, starting up, the
/// connection dropped) rather than that the request itself was wrong.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        // A certificate that is not trusted stays so.
        None if is_tls_failure(error) => false,
        None => true, // I/O, a closed connection, a refused connect: no SQLSTATE
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_stays_out_of_the_description() {
        let server = Server::parse(
            "postgres://weir:s3cret-pw@127.0.0.1:15432/shop",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(server.place(), "127.0.0.1:15432/shop");
        assert!(!format!("{server:?}").contains("s3cret"));
    }

    #[test]
    fn a_bad_url_is_an_error_that_does_not_repeat_it() {
        let err = Server::parse(
            "postgres://weir:s3cret@host:notaport/db",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
