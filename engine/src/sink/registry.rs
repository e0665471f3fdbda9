//! The sink connectors, by name: `CREATE TABLE ... WITH (connector = 'kafka', ...)` is checked
//! (at `weir validate`) and opened (at `weir run`) here and nowhere else. Adding a sink is a
//! new file with a [`SinkConnector`] and one `register` line where the registry is built
//! (`weir_cli::connectors`); neither the planner nor the CLI names a connector.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use super::Sink;
use crate::error::{BoxError, EngineError, Result};
use crate::options::Options;

/// What the planner knows about a table when its connector checks the table's options.
#[derive(Debug, Clone, Copy)]
pub struct SinkTarget<'a> {
    /// The table, as named in `CREATE TABLE`.
    pub table: &'a str,
    /// The table's columns (the query's output).
    pub schema: &'a Schema,
    /// `output_mode = 'update'`: the columns rows are MERGEd on (the window and group keys);
    /// `None` in append mode.
    pub update_keys: Option<&'a [String]>,
}

/// Where a planned sink is opened.
#[derive(Debug, Clone, Copy)]
pub struct SinkPlace<'a> {
    /// The lake folder (relative table paths are inside it).
    pub lake: &'a Path,
    /// The pipeline (idempotent sinks name their transactions after it and the table).
    pub pipeline: &'a str,
    /// The table.
    pub table: &'a str,
    /// The table's columns.
    pub schema: &'a SchemaRef,
}

/// A table's sink as planned: its options checked, opened when the pipeline runs.
#[async_trait::async_trait]
pub trait PlannedSink: std::fmt::Debug + Send + Sync {
    /// Where the table writes, for `weir explain` (`delta table 'gold/revenue'`).
    fn describe(&self) -> String;

    /// The folder inside the lake the table owns, for sinks that write there (two tables may
    /// not overlap); `None` for sinks that write elsewhere (a Kafka topic).
    fn lake_path(&self) -> Option<&str> {
        None
    }

    /// Opens the sink, ready to write epochs.
    async fn open(&self, place: SinkPlace<'_>) -> Result<Box<dyn Sink>, BoxError>;
}

/// A kind of sink: takes the options it knows from a table's WITH clause.
pub trait SinkConnector: Send + Sync {
    /// Checks and takes the table's options (everything but `connector` and `output_mode`,
    /// which the planner takes); the planner rejects what is left.
    fn plan(&self, target: SinkTarget<'_>, options: &mut Options) -> Result<Arc<dyn PlannedSink>>;
}

/// Sink connectors by name, with the one a table without `connector` uses.
#[derive(Clone)]
pub struct SinkRegistry {
    connectors: BTreeMap<&'static str, Arc<dyn SinkConnector>>,
    default: &'static str,
}

impl std::fmt::Debug for SinkRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkRegistry")
            .field("connectors", &self.names())
            .field("default", &self.default)
            .finish()
    }
}

impl SinkRegistry {
    /// An empty registry whose tables default to connector `default` (register it too).
    pub fn new(default: &'static str) -> Self {
        SinkRegistry {
            connectors: BTreeMap::new(),
            default,
        }
    }

    /// Adds (or replaces) connector `name`.
    pub fn register(&mut self, name: &'static str, connector: Arc<dyn SinkConnector>) {
        self.connectors.insert(name, connector);
    }

    /// The connectors' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.connectors.keys().copied().collect()
    }

    /// The connector a table uses: `connector` if given, else the default. Unknown names are
    /// an error listing the registered ones.
    pub fn connector(&self, connector: Option<&str>) -> Result<(&'static str, &dyn SinkConnector)> {
        let name = connector.unwrap_or(self.default).to_ascii_lowercase();
        match self.connectors.get_key_value(name.as_str()) {
            Some((name, connector)) => Ok((name, connector.as_ref())),
            None => Err(EngineError::option_hint(
                "connector",
                format!("unknown connector '{name}' for a table"),
                format!("use one of: {}", self.names().join(", ")),
            )),
        }
    }
}

/// The spelling of `schema`'s column named `name`: exact, else the one column that matches
/// case-insensitively (as Spark resolves names).
pub fn column_named(schema: &Schema, name: &str) -> Option<String> {
    if schema.field_with_name(name).is_ok() {
        return Some(name.to_string());
    }
    let mut matches = schema
        .fields()
        .iter()
        .filter(|f| f.name().eq_ignore_ascii_case(name));
    match (matches.next(), matches.next()) {
        (Some(f), None) => Some(f.name().clone()),
        _ => None,
    }
}
