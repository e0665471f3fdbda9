//! `CREATE TABLE ... WITH (connector = 'postgres', url = '${PG_URL}', ...)`: the connector
//! (options checked at `weir validate`), the planned sink (opened at `weir run`: table created
//! or checked before any epoch), and the sink that writes each epoch exactly once.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use tokio_postgres::Client;
use weir_engine::error::{BoxError, EngineError, Result};
use weir_engine::options::Options;
use weir_engine::sink::{
    column_named, PlannedSink, Sink, SinkConnector, SinkPlace, SinkReport, SinkTarget,
};

use crate::connect::{is_transient, url_option_error, Retry, Server};
use crate::error::PostgresError;
use crate::table::{last_epoch, mapped_columns, prepare, TableName};
use crate::write::{write_epoch, Failure, Target};

/// How long an unreachable server is waited for, unless `server_timeout` says otherwise (the
/// Kafka source's `broker_timeout` default).
const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(300);

/// The `postgres` sink connector.
#[derive(Debug, Default)]
pub struct PostgresSinkConnector;

/// A PostgreSQL table as planned: server, table, key, columns checked.
#[derive(Debug)]
pub struct PlannedPostgresSink {
    server: Server,
    name: TableName,
    primary_key: Vec<String>,
    /// `on_conflict = 'nothing'`.
    keep_first: bool,
}

fn key_columns(target: &SinkTarget<'_>, option: Option<String>) -> Result<Vec<String>> {
    let Some(list) = option else {
        // In update mode the window and group keys are the natural primary key.
        return Ok(target
            .update_keys
            .map(<[String]>::to_vec)
            .unwrap_or_default());
    };
    let keys = named_columns(target, &list)?;
    if let Some(update_keys) = target.update_keys {
        check_update_key(update_keys, &keys)?;
    }
    Ok(keys)
}

/// In update mode a row replaces the row of its window and group keys, so `primary_key` must
/// be exactly those keys, or all but one window bound (`window_start` determines
/// `window_end`): a key that leaves one out would let different windows or groups overwrite
/// each other, and an extra column would keep a window's old rows beside its new one.
fn check_update_key(update_keys: &[String], keys: &[String]) -> Result<()> {
    let missing: Vec<&String> = update_keys.iter().filter(|k| !keys.contains(k)).collect();
    let extra: Vec<&String> = keys.iter().filter(|k| !update_keys.contains(k)).collect();
    let one_bound_left_out = match missing.as_slice() {
        [] => true,
        [one] => {
            let other = if one.as_str() == "window_end" {
                "window_start"
            } else {
                "window_end"
            };
            matches!(one.as_str(), "window_start" | "window_end") && keys.iter().any(|k| k == other)
        }
        _ => false,
    };
    if extra.is_empty() && one_bound_left_out {
        return Ok(());
    }
    Err(EngineError::option_hint(
        "primary_key",
        format!(
            "in update mode a row replaces the row with the same window and group keys ({}), \
             so the primary key must be those columns (window_end may be left out beside \
             window_start); this one would let rows of different windows or groups overwrite \
             each other, or keep old rows beside new ones",
            update_keys.join(", ")
        ),
        format!(
            "write primary_key = '{}', or leave it out (that is the default)",
            update_keys.join(",")
        ),
    ))
}

/// The columns of a comma list, each checked to be a column of the table.
fn named_columns(target: &SinkTarget<'_>, list: &str) -> Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            column_named(target.schema, k).ok_or_else(|| {
                EngineError::option(
                    "primary_key",
                    format!("`{k}` is not a column of `{}`", target.table),
                )
            })
        })
        .collect()
}

impl SinkConnector for PostgresSinkConnector {
    fn plan(&self, target: SinkTarget<'_>, options: &mut Options) -> Result<Arc<dyn PlannedSink>> {
        let url = options.require_str(
            "url",
            "the server, e.g. url = '${PG_URL}' with PG_URL=postgres://user:password@host:5432/db \
             in the environment (keeps the password out of the file)",
        )?;
        let timeout = options
            .take_duration("server_timeout")?
            .unwrap_or(DEFAULT_SERVER_TIMEOUT);
        let server = Server::parse(&url, timeout).map_err(url_option_error)?;
        let name = TableName::parse(&options.take_str("table").unwrap_or(target.table.into()));
        let primary_key = key_columns(&target, options.take_str("primary_key"))?;
        let keep_first = match options.take_choice("on_conflict", &["update", "nothing"])? {
            Some(choice) if choice == "nothing" => {
                if primary_key.is_empty() || target.update_keys.is_some() {
                    return Err(EngineError::option_hint(
                        "on_conflict",
                        "'nothing' keeps a key's first row, so it needs `primary_key` on an \
                         append-mode table (update mode must replace rows)",
                        "add primary_key = 'id', or leave on_conflict out",
                    ));
                }
                true
            }
            _ => false,
        };
        mapped_columns(target.table, target.schema)
            .map_err(|e| EngineError::option("connector", e.to_string()))?;
        Ok(Arc::new(PlannedPostgresSink {
            server,
            name,
            primary_key,
            keep_first,
        }))
    }
}

#[async_trait::async_trait]
impl PlannedSink for PlannedPostgresSink {
    fn describe(&self) -> String {
        let mode = match self.primary_key.is_empty() {
            true => "appended".to_string(),
            false if self.keep_first => format!(
                "inserted on ({}), a key's first row kept",
                self.primary_key.join(", ")
            ),
            false => format!("upserted on ({})", self.primary_key.join(", ")),
        };
        format!(
            "postgres table {} on {}, {mode}",
            self.name,
            self.server.place()
        )
    }

    async fn open(&self, place: SinkPlace<'_>) -> std::result::Result<Box<dyn Sink>, BoxError> {
        let columns = mapped_columns(place.table, place.schema)?;
        let client = self
            .server
            .connect(&format!("open table {}", self.name))
            .await?;
        prepare(
            &client,
            self.server.place(),
            &self.name,
            &columns,
            &self.primary_key,
        )
        .await?;
        let last = last_epoch(&client, self.server.place(), &self.name, place.pipeline).await?;
        Ok(Box::new(PostgresSink {
            server: self.server.clone(),
            client: Some(client),
            last_committed: last,
            target: Target {
                name: self.name.clone(),
                pipeline: place.pipeline.to_string(),
                columns,
                primary_key: self.primary_key.clone(),
                keep_first: self.keep_first,
            },
        }))
    }
}

/// Writes a node's rows to a PostgreSQL table, one transaction per epoch.
pub struct PostgresSink {
    server: Server,
    client: Option<Client>,
    last_committed: Option<u64>,
    target: Target,
}

impl PostgresSink {
    /// One epoch, retried (on a new connection) while the server is away, up to
    /// `server_timeout`: a retry of an epoch that did commit finds it and skips.
    async fn write(
        &mut self,
        epoch: u64,
        rows: &[RecordBatch],
        replaced: &[RecordBatch],
    ) -> std::result::Result<SinkReport, PostgresError> {
        let what = format!("write epoch {epoch} of table {}", self.target.name);
        let mut retry = Retry::new(self.server.timeout);
        loop {
            let client = match self.client.take() {
                Some(client) if !client.is_closed() => client,
                _ => match self.server.connect_once().await {
                    Ok(client) => client,
                    Err(e) if is_transient(&e) => {
                        retry.wait(self.server.place(), &what, e).await?;
                        continue;
                    }
                    Err(e) => return Err(PostgresError::server(self.server.place(), &what, e)),
                },
            };
            let mut client = client;
            match write_epoch(&mut client, &self.target, epoch, rows, replaced).await {
                Ok(written) => {
                    retry.resumed(self.server.place());
                    self.client = Some(client);
                    self.last_committed = Some(epoch);
                    return Ok(SinkReport {
                        rows_written: written.rows,
                        already_committed: written.already_committed,
                        version: None,
                        rows_inserted: written.inserted,
                    });
                }
                Err(Failure::Server(_, e)) if is_transient(&e) => {
                    retry.wait(self.server.place(), &what, e).await?;
                }
                Err(Failure::Server(step, e)) => {
                    let what = format!("{step} (epoch {epoch} of table {})", self.target.name);
                    return Err(PostgresError::server(self.server.place(), &what, e));
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    fn describe(&self) -> String {
        format!(
            "postgres table {} on {}",
            self.target.name,
            self.server.place()
        )
    }

    fn last_committed_epoch(&self) -> Option<u64> {
        self.last_committed
    }

    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> std::result::Result<SinkReport, BoxError> {
        Ok(self.write(epoch, &batches, &[]).await?)
    }

    async fn write_epoch_replacing(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
    ) -> std::result::Result<SinkReport, BoxError> {
        if self.target.primary_key.is_empty() && replaced.iter().any(|b| b.num_rows() > 0) {
            return Err(format!(
                "{} has no primary key, so the rows of replaced sessions cannot be deleted; \
                 set primary_key",
                self.describe()
            )
            .into());
        }
        Ok(self.write(epoch, &batches, &replaced).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::check_update_key;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_update_mode_key_must_identify_a_window_and_group() {
        let update = names(&["window_start", "window_end", "product_id"]);
        for ok in [
            &["window_start", "window_end", "product_id"][..],
            &["window_start", "product_id"],
            &["product_id", "window_end"],
        ] {
            assert!(check_update_key(&update, &names(ok)).is_ok(), "{ok:?}");
        }
        for wrong in [
            &["product_id"][..],
            &["window_start"],
            &["window_start", "window_end", "product_id", "total_revenue"],
        ] {
            let err = check_update_key(&update, &names(wrong)).unwrap_err();
            assert!(err.to_string().contains("overwrite"), "{err}");
        }
    }
}
