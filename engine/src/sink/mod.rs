//! The sink trait: how the engine hands an epoch's rows to a table without knowing its format.

pub mod kafka;
mod registry;

pub use registry::{column_named, PlannedSink, SinkConnector, SinkPlace, SinkRegistry, SinkTarget};

use arrow::array::RecordBatch;

use crate::error::BoxError;

/// What a sink did with one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkReport {
    /// Rows written (0 when skipped).
    pub rows_written: u64,
    /// True when the sink had already committed this epoch (a replay after a crash).
    pub already_committed: bool,
    /// The table version the commit created, where the format has versions.
    pub version: Option<u64>,
    /// For a sink that MERGEs (update output mode): how many of the rows written were new
    /// rows of the table; the others replaced rows with the same keys. `None` for appends.
    pub rows_inserted: Option<u64>,
}

/// A table that receives every epoch's rows of one pipeline node.
///
/// Implementations must be idempotent per epoch: writing an epoch that was already committed
/// (the engine replays the last epoch after a crash) must not duplicate rows.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Where the sink writes (a table URL), for messages.
    fn describe(&self) -> String;

    /// The last epoch of this pipeline the target already holds, for targets that record it
    /// (a Delta table's `txn` version). The engine refuses to start from a checkpoint that is
    /// behind it: its new epochs would be skipped as already committed.
    fn last_committed_epoch(&self) -> Option<u64> {
        None
    }

    /// Writes `batches` as epoch `epoch`, or skips them if that epoch is already committed.
    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError>;

    /// Like [`Sink::write_epoch`], and in the same commit deletes the rows `replaced` names
    /// (rows emitted earlier that the epoch replaced with other keys: merged sessions in update
    /// output mode). Only sinks that MERGE on keys can delete; the others refuse.
    async fn write_epoch_replacing(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        if replaced.iter().any(|b| b.num_rows() > 0) {
            return Err(format!(
                "{} cannot delete the rows of replaced sessions (update output mode needs a \
                 Delta table)",
                self.describe()
            )
            .into());
        }
        self.write_epoch(epoch, batches).await
    }
}
