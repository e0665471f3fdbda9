//! What a runnable pipeline is made of: its sources and its nodes (tables and views), as the
//! planner and the CLI assemble them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::logical_expr::LogicalPlan;

use super::epoch_table::EpochTable;
use super::partition::EventTimeKey;
use crate::format::json::decode::JsonDecoder;
use crate::operators::row_errors::RowInput;
use crate::operators::StreamOperator;
use crate::sink::Sink;
use crate::source::Source;

/// A source of the pipeline with what it needs at run time.
pub struct SourceNode {
    /// Name from `CREATE SOURCE`.
    pub name: String,
    /// The connector.
    pub source: Box<dyn Source>,
    /// Decodes records into the declared columns.
    pub decoder: JsonDecoder,
    /// The stream SQL reads (declared + metadata columns).
    pub table: Arc<EpochTable>,
    /// Where undecodable records go.
    pub dead_letter: Box<dyn Sink>,
    /// The stream `_dead_letter.<source>` that queries of the pipeline read: each epoch's dead
    /// letters of this source (undecodable records, and late rows of windowed nodes that ran
    /// before the reading node; the planner orders readers after every other node).
    pub dead_letter_stream: Arc<EpochTable>,
    /// The declared event-time column and watermark delay, if the source has a WATERMARK.
    pub event_time: Option<EventTime>,
}

/// A source's `WATERMARK FOR column AS column - delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTime {
    /// The TIMESTAMP column (milliseconds, UTC).
    pub column: String,
    /// How late events may be, in milliseconds.
    pub delay_ms: i64,
    /// After this long without new rows the source stops holding the watermark back, so one
    /// quiet source (or Kafka partition) does not stall every window.
    pub idle_timeout: Duration,
    /// A row whose event time is more than this after the wall clock is a dead letter
    /// (`max_event_time_ahead`, default a day; `None` when set to 'none').
    pub max_ahead: Option<Duration>,
}

/// A view or table of the pipeline: a plan over sources and upstream nodes.
pub struct QueryNode {
    /// Name from `CREATE TABLE` / `CREATE VIEW`.
    pub name: String,
    /// The logical plan, built once at start.
    pub plan: LogicalPlan,
    /// The stream downstream nodes read.
    pub table: Arc<EpochTable>,
    /// The table this node writes, if it is a `CREATE TABLE`.
    pub sink: Option<Box<dyn Sink>>,
    /// The table's stateful step (a window), kept across epochs; `None` for a stateless
    /// table or view, whose plan runs over each epoch's rows alone.
    pub operator: Option<Box<dyn StreamOperator>>,
    /// The streams (sources and nodes) the node's plan reads.
    pub inputs: Vec<String>,
    /// For a stateless node that reads one stream and joins nothing: that stream, so rows its
    /// query fails on can be found and dead-lettered (see `row_errors`).
    pub row_input: Option<RowInput>,
}

/// A source at run time; its dead-letter sink lives in `Pipeline::dead_letters` so it can be
/// committed alongside the tables.
pub(super) struct RunningSource {
    pub(super) name: String,
    pub(super) source: Box<dyn Source>,
    pub(super) decoder: JsonDecoder,
    pub(super) table: Arc<EpochTable>,
    pub(super) event_time: Option<EventTime>,
    /// When each of the source's partitions (the key in `max_event_ms`) last delivered rows;
    /// partitions not seen in this run count from its start.
    pub(super) last_data: BTreeMap<EventTimeKey, Instant>,
}
