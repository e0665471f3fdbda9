//! Sources: where an epoch's records come from, and how far each epoch reads.
//!
//! A source plans a *range* for the next epoch (which the pipeline writes to the offset log
//! before any of the epoch is committed), reads exactly that range, and moves past it once read,
//! so the next epoch can be planned and read while this one commits. A failed epoch ends the
//! run; on restart positions are restored from the offset log's committed ranges.
//! Ranges are JSON so each connector records what it needs (event indices, file names).

mod files;
pub mod generator;
mod kafka;
pub mod raw;
mod registry;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use serde_json::Value;

pub use files::FilesSource;
pub use generator::GeneratorSource;
pub use kafka::{KafkaSource, PartitionLag};
pub use registry::{SourceArgs, SourceFactory, SourceRegistry};

use crate::error::{EngineError, Result};
use crate::source::raw::RawBatch;

/// Metadata columns every source has: its name and the epoch that read the row.
pub const COMMON_METADATA: [&str; 2] = ["_source", "_epoch"];

/// A stream of raw records read in epochs.
pub trait Source: Send {
    /// Metadata columns this connector adds per record (besides `_source` and `_epoch`).
    fn metadata_fields(&self) -> Vec<FieldRef>;

    /// Moves past every range in `history` (the offset log, oldest first) after a restart.
    fn restore(&mut self, history: &[Value]) -> Result<()>;

    /// The range the next epoch should read, or `None` when nothing new is available now.
    /// With `available_now`, rate limits are ignored: everything that exists is available.
    fn plan_next(&mut self, available_now: bool) -> Result<Option<Value>>;

    /// Reads exactly `range` (a value returned by `plan_next`, possibly from a previous run).
    fn read(&mut self, range: &Value) -> Result<RawBatch>;

    /// Marks `range` as read, so the next plan starts after it.
    fn advance(&mut self, range: &Value) -> Result<()>;

    /// Called once `range` is committed (tables and commit log), for sources that report
    /// progress elsewhere (Kafka commits the offsets to its consumer group for lag tools).
    fn committed(&mut self, _range: &Value) -> Result<()> {
        Ok(())
    }

    /// Where the source is, for `weir status` and progress lines.
    fn describe_position(&self) -> String;

    /// For sources with an external backlog (Kafka): each partition's position after the
    /// committed `history` and its end on the broker, so `weir status` can show consumer lag.
    /// `None` for sources without one.
    fn lag(&mut self, _history: &[Value]) -> Result<Option<Vec<PartitionLag>>> {
        Ok(None)
    }

    /// The backlog per partition as the source last saw it (the ends from its last plan, no
    /// new request to a broker), for metrics and `weir show`. `None` for sources without one.
    fn backlog(&self) -> Option<Vec<PartitionLag>> {
        None
    }
}

/// The fields of the common metadata columns.
pub fn common_metadata_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new("_source", DataType::Utf8, false)),
        Arc::new(Field::new("_epoch", DataType::Int64, false)),
    ]
}

/// Reads a typed range back from the offset log.
pub(crate) fn parse_range<T: serde::de::DeserializeOwned>(
    source: &str,
    range: &Value,
) -> Result<T> {
    serde_json::from_value(range.clone()).map_err(|e| EngineError::Source {
        source_name: source.to_string(),
        message: format!(
            "offset log entry {range} does not match this connector ({e}); was the source's \
             connector changed? Start with a fresh --checkpoint to reset"
        ),
        cause: None,
    })
}
