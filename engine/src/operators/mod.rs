//! Stateful streaming operators: the steps of a table that keep state across epochs.
//!
//! The epoch loop (`crate::runtime`) drives every operator through [`StreamOperator`] and
//! knows none by name: it opens each one at start, restores its state from the checkpoint,
//! hands it each epoch with the watermark, routes the rows it emits (and, in update output
//! mode, the rows they replace) to the table's sink, routes its late rows to dead letters,
//! snapshots its state into the checkpoint, and reports its metrics. One folder per operator,
//! holding the operator and its logical plan node; [`registry`] lists the node types (one line
//! each) and finds the steps of a plan. [`window`] (TUMBLE, HOP, SESSION) is the first;
//! [`dedupe`] and [`join`] (interval joins of two streams) follow.
//!
//! `row_errors` is not an operator: it isolates the rows a stateless query fails on.

pub mod dedupe;
pub mod join;
pub mod registry;
pub mod row_errors;
pub mod step_exec;
pub mod window;

pub use registry::{stateful_node, stateful_steps, StatefulNode, StatefulStep, TableContext};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::error::{EngineError, Result};

/// What an operator is given for one epoch.
pub struct EpochStep<'a> {
    /// The session the pipeline's streams are registered in (each holds this epoch's rows).
    pub ctx: &'a SessionContext,
    /// The table's plan, of which the operator is a step.
    pub plan: &'a LogicalPlan,
    /// The table's name, for errors.
    pub node: &'a str,
    /// The epoch.
    pub epoch: u64,
    /// The watermark of this epoch (epoch milliseconds; `i64::MAX` in a drain epoch), from
    /// the data of the epochs before it, as in Spark: state behind it is final and emitted.
    pub watermark_ms: Option<i64>,
    /// The watermark rows are judged late by: this epoch's for an operator reading sources;
    /// the previous epoch's for one fed by another operator, whose output of this epoch is
    /// released at this epoch's watermark and must not count as late (Spark's rule).
    pub late_watermark_ms: Option<i64>,
}

/// What an operator produced in one epoch.
#[derive(Debug, Default)]
pub struct OperatorOutput {
    /// The table's output rows.
    pub rows: Vec<RecordBatch>,
    /// In update output mode: earlier output rows that this epoch replaced with rows of other
    /// keys (merged sessions); the sink deletes them in the same commit.
    pub replaced: Vec<RecordBatch>,
    /// Rows that arrived behind the watermark.
    pub late: LateRows,
}

/// The rows an operator found late in one epoch.
#[derive(Debug, Default)]
pub struct LateRows {
    /// How many.
    pub count: u64,
    /// The rows themselves, when they are to be dead-lettered (see `dead_letter_to`).
    pub rows: Vec<RecordBatch>,
    /// The source whose dead-letter table receives them (its `late_data = 'dead_letter'`);
    /// `None`: they are counted and dropped.
    pub dead_letter_to: Option<String>,
    /// The dead letter's `error` text.
    pub reason: &'static str,
    /// The column of `rows` that holds their event time.
    pub time_column: String,
}

/// An operator's state as stored in the checkpoint: Arrow batches of one schema.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    /// The state's layout.
    pub layout: StateLayout,
    /// The state rows.
    pub batches: Vec<RecordBatch>,
}

/// An operator's state as read back from a checkpoint.
#[derive(Debug, Clone)]
pub struct StoredState {
    /// The state format it was written in (at most the operator's own
    /// [`StateLayout::format_version`]): an operator reads older formats too.
    pub format_version: u32,
    /// The state rows.
    pub batches: Vec<RecordBatch>,
}

/// What an operator's state looks like; a checkpoint refuses state of another layout.
#[derive(Debug, Clone)]
pub struct StateLayout {
    /// The state's columns.
    pub schema: SchemaRef,
    /// The operator's definition as text (`TUMBLE on ts: size 1min; keys ...`): state built
    /// for another definition cannot be reused.
    pub definition: String,
    /// The version of the operator's state format; a checkpoint of an older version must
    /// still restore.
    pub format_version: u32,
}

/// What an operator reports after each epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct OperatorMetrics {
    /// Rows that entered the operator in the epoch.
    pub rows_in: u64,
    /// Rows it emitted in the epoch.
    pub rows_out: u64,
    /// Rows it found late in the epoch.
    pub late_rows: u64,
    /// Rows of state it holds after the epoch (for a window: open (window, keys) groups).
    pub state_rows: u64,
    /// Bytes of state it holds in memory after the epoch.
    pub state_bytes: u64,
}

/// A stateful step of a table, kept across epochs.
#[async_trait::async_trait]
pub trait StreamOperator: Send + Sync {
    /// What the operator is, with its state and output mode, for `weir explain` and messages
    /// (`window TUMBLE on ts: size 1min, append output`).
    fn describe(&self) -> String;

    /// Prepares the operator for the table's `plan` (called once, before any epoch) and
    /// returns the layout of its state.
    async fn open(&mut self, ctx: &SessionContext, plan: &LogicalPlan) -> Result<StateLayout>;

    /// Puts back the state of a snapshot whose layout matched (after a restart).
    fn restore(&mut self, state: StoredState) -> Result<()>;

    /// Processes one epoch: reads the step's input from the epoch's streams, folds it into
    /// the state (leaving late rows out), and returns what the state releases at the
    /// watermark.
    async fn process_epoch(&mut self, step: EpochStep<'_>) -> Result<OperatorOutput>;

    /// The state to store in the checkpoint after the epoch.
    fn snapshot(&self) -> Result<StateSnapshot>;

    /// The last epoch's metrics and the state held.
    fn metrics(&self) -> OperatorMetrics;

    /// How far behind the watermark the event times of the rows it emits can be (ms): a join
    /// emits a pair as late as its time bound after the earlier row. Steps downstream judge
    /// lateness and close their state by a watermark held back by this much.
    fn output_delay_ms(&self) -> i64 {
        0
    }
}

/// Event times of `column` in epoch milliseconds (`i64::MIN` for NULL), for the operators that
/// keep rows by event time (dedupe, join).
pub(crate) fn times_ms(column: &ArrayRef) -> Result<Vec<i64>> {
    let DataType::Timestamp(_, tz) = column.data_type() else {
        return Err(EngineError::DataFusion(DataFusionError::Plan(format!(
            "an event time (a dedupe's ORDER BY, a join's time bound) must be a TIMESTAMP, not {}",
            column.data_type()
        ))));
    };
    let ms = cast(
        column,
        &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
    )?;
    let ms = cast(&ms, &DataType::Int64)?;
    let ms = ms
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EngineError::internal("timestamps did not cast to Int64"))?;
    Ok((0..ms.len())
        .map(|i| if ms.is_null(i) { i64::MIN } else { ms.value(i) })
        .collect())
}
