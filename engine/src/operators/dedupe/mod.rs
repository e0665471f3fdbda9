//! The dedupe operator: one row per key within the watermark, across epochs and restarts.
//!
//! - `node`: the logical plan node the planner puts where SQL deduplicates (`ROW_NUMBER() ...
//!   WHERE rn = 1`, `SELECT DISTINCT ON (...)`).
//! - `state`: the keys seen, each with its event time (and for keep-first its row until the
//!   watermark makes it final), forgotten once the watermark passes the time by the watermark
//!   delay, as Spark's `dropDuplicatesWithinWatermark` does.
//!
//! Each epoch the rows below the step are read, late rows (event time behind the watermark)
//! split off, the rest offered to the state; the rows the state releases get `rn = 1` and the
//! rest of the table's plan runs over them.

pub mod arena;
pub mod key_bytes;
pub mod keys;
pub mod node;
pub mod state;

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;

use self::key_bytes::KeyEncoder;
use self::state::{DedupeState, Keep, Offered};
use crate::dead_letter::LATE_BEFORE_WATERMARK;
use crate::error::{EngineError, Result};
use crate::operators::step_exec::{plan_over_released, StatefulStepExec};
use crate::operators::times_ms;
use crate::operators::{
    EpochStep, LateRows, OperatorMetrics, OperatorOutput, StateLayout, StateSnapshot, StoredState,
    StreamOperator,
};

/// The version of the dedupe state format in checkpoints. 1: every key in Arrow's row format;
/// 2: a single text or binary key as its own bytes (see `key_bytes`). Format 1 still restores.
pub const DEDUPE_STATE_FORMAT: u32 = 2;

/// A dedupe as the planner found it.
#[derive(Debug, Clone)]
pub struct DedupeConfig {
    /// The rows to deduplicate (the plan below the step).
    pub rows: Option<LogicalPlan>,
    /// Key columns of those rows.
    pub keys: Vec<String>,
    /// Their event-time column, if any.
    pub time_column: Option<String>,
    /// Which row of a key is kept.
    pub keep: Keep,
    /// How long after its event time a key is remembered.
    pub horizon_ms: i64,
    /// The dedupe as text; checkpoints refuse state of another definition.
    pub definition: String,
    /// The source whose dead-letter table receives late rows, when it asks for them.
    pub late_rows_to: Option<String>,
}

/// Where the step's columns are, found by `open`.
#[derive(Debug)]
struct Opened {
    state: DedupeState,
    keys: KeyEncoder,
    key_columns: Vec<usize>,
    time_column: Option<usize>,
}

/// A dedupe as a [`StreamOperator`].
#[derive(Debug)]
pub struct DedupeOperator {
    config: DedupeConfig,
    opened: Option<Opened>,
    last: OperatorMetrics,
}

impl DedupeOperator {
    /// A dedupe operator for `config`; `open` finds its columns in the table's plan.
    pub fn new(config: DedupeConfig) -> Self {
        DedupeOperator {
            config,
            opened: None,
            last: OperatorMetrics::default(),
        }
    }

    fn rows_plan(&self) -> Result<&LogicalPlan> {
        self.config
            .rows
            .as_ref()
            .ok_or_else(|| EngineError::internal("the dedupe step has no ROW_NUMBER() window"))
    }

    fn layout(&self, state: &DedupeState) -> StateLayout {
        StateLayout {
            schema: state.snapshot_schema(),
            definition: self.config.definition.clone(),
            format_version: DEDUPE_STATE_FORMAT,
        }
    }
}

fn column_index(schema: &SchemaRef, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        EngineError::DataFusion(DataFusionError::Plan(format!(
            "the rows to deduplicate have no column `{name}`"
        )))
    })
}

/// `rows` with a `ROW_NUMBER()` column of ones, in the step's output schema.
fn numbered(rows: RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let ones = UInt64Array::from(vec![1u64; rows.num_rows()]);
    with_row_numbers(rows, ones, schema)
}

/// `rows` with `numbers` as its `ROW_NUMBER()` column, in the step's output schema.
fn with_row_numbers(
    rows: RecordBatch,
    numbers: UInt64Array,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(numbers));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The row number a keep-first dedupe gives a row it drops (a duplicate, or a late row): not
/// 1, so the step's own `rn = 1` filter, which the planner keeps above the step, removes it.
const DROPPED_ROW_NUMBER: u64 = 2;

/// What one epoch's input did.
#[derive(Default)]
struct Offers {
    rows_in: u64,
    late: u64,
    late_rows: Vec<RecordBatch>,
    /// Keep-first-to-arrive: every input batch, with the row number of each row (1 for the
    /// row kept, [`DROPPED_ROW_NUMBER`] for the others). Emitting these rather than copying
    /// the kept rows out leaves the copying to the step's `rn = 1` filter, which runs anyway.
    numbered: Vec<(RecordBatch, UInt64Array)>,
    /// Rows kept (row number 1) in `numbered`.
    kept: u64,
}

impl DedupeOperator {
    /// Offers every on-time row of `batches` to the state; late rows are counted (and kept
    /// when they are dead-lettered).
    fn offer_rows(&mut self, batches: Vec<RecordBatch>, late_ms: Option<i64>) -> Result<Offers> {
        let keep_late = self.config.late_rows_to.is_some();
        let first_arrived = self.config.keep == Keep::FirstArrived;
        let opened = self.opened.as_mut().ok_or_else(|| {
            EngineError::internal("the dedupe operator was used before it was opened")
        })?;
        let mut offers = Offers::default();
        for batch in batches {
            let n = batch.num_rows();
            offers.rows_in += n as u64;
            let keys: Vec<ArrayRef> = opened
                .key_columns
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            let keys = opened.keys.encode(&keys)?;
            let times = match opened.time_column {
                Some(i) => Some(times_ms(batch.column(i))?),
                None => None,
            };
            let index = opened.state.add_batch(batch.clone());
            let mut late = vec![false; n];
            let mut numbers = Vec::with_capacity(if first_arrived { n } else { 0 });
            for (row, is_late) in late.iter_mut().enumerate() {
                let time = times.as_ref().map_or(i64::MIN, |t| t[row]);
                if times.is_some() && late_ms.is_some_and(|wm| time < wm) {
                    *is_late = true;
                    offers.late += 1;
                    if first_arrived {
                        numbers.push(DROPPED_ROW_NUMBER);
                    }
                    continue;
                }
                let offered = opened.state.offer(keys.get(row), row, index, time)?;
                if first_arrived {
                    numbers.push(match offered {
                        Offered::Kept => 1,
                        Offered::Duplicate => DROPPED_ROW_NUMBER,
                    });
                }
            }
            if first_arrived {
                offers.kept += numbers.iter().filter(|&&n| n == 1).count() as u64;
                offers
                    .numbered
                    .push((batch.clone(), UInt64Array::from(numbers)));
            }
            if keep_late && late.iter().any(|l| *l) {
                let mask = BooleanArray::from(late);
                offers.late_rows.push(filter_record_batch(&batch, &mask)?);
            }
        }
        Ok(offers)
    }
}

#[async_trait::async_trait]
impl StreamOperator for DedupeOperator {
    fn describe(&self) -> String {
        let mode = if self.config.keep == Keep::Latest {
            "update"
        } else {
            "append"
        };
        format!("{}, {mode} output", self.config.definition)
    }

    async fn open(&mut self, ctx: &SessionContext, plan: &LogicalPlan) -> Result<StateLayout> {
        let physical = ctx.state().create_physical_plan(plan).await?;
        StatefulStepExec::find(&physical)
            .ok_or_else(|| EngineError::internal("the plan has no dedupe step"))?;
        let rows = ctx.state().create_physical_plan(self.rows_plan()?).await?;
        let schema = rows.schema();
        let key_columns = self
            .config
            .keys
            .iter()
            .map(|k| column_index(&schema, k))
            .collect::<Result<Vec<_>>>()?;
        let time_column = match &self.config.time_column {
            Some(t) => Some(column_index(&schema, t)?),
            None => None,
        };
        if let Some(i) = time_column {
            times_ms(&arrow::array::new_empty_array(schema.field(i).data_type()))?;
        }
        let key_types: Vec<DataType> = key_columns
            .iter()
            .map(|&i| schema.field(i).data_type().clone())
            .collect();
        let state = DedupeState::new(self.config.keep, self.config.horizon_ms, schema);
        let layout = self.layout(&state);
        self.opened = Some(Opened {
            state,
            keys: KeyEncoder::new(&key_types)?,
            key_columns,
            time_column,
        });
        Ok(layout)
    }

    fn restore(&mut self, stored: StoredState) -> Result<()> {
        let opened = self.opened.as_mut().ok_or_else(|| {
            EngineError::internal("the dedupe operator was used before it was opened")
        })?;
        let batches = if stored.format_version < 2 {
            // Format 1 held every key in Arrow's row format.
            let convert = |keys: &BinaryArray| opened.keys.from_row_format(keys);
            stored
                .batches
                .iter()
                .map(|batch| state::with_keys_converted(batch, convert))
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            stored.batches
        };
        Ok(opened.state.restore(batches)?)
    }

    async fn process_epoch(&mut self, step: EpochStep<'_>) -> Result<OperatorOutput> {
        let (ctx, plan_error) = (step.ctx, EngineError::plan(step.node, step.epoch));
        let started = std::time::Instant::now();
        let rows = ctx
            .state()
            .create_physical_plan(self.rows_plan()?)
            .await
            .map_err(plan_error)?;
        let batches = collect(rows, ctx.task_ctx()).await.map_err(plan_error)?;
        let read = started.elapsed();
        let offers = self.offer_rows(batches, step.late_watermark_ms)?;
        let offered = started.elapsed();
        let opened = self.opened.as_mut().ok_or_else(|| {
            EngineError::internal("the dedupe operator was used before it was opened")
        })?;
        let released = opened.state.finish_epoch(step.watermark_ms)?;
        let finished = started.elapsed();
        // The rest of the table's plan over the released rows.
        let physical = ctx
            .state()
            .create_physical_plan(step.plan)
            .await
            .map_err(plan_error)?;
        let step_node = StatefulStepExec::find(&physical)
            .ok_or_else(|| EngineError::internal("the plan has no dedupe step"))?;
        let schema = step_node.schema();
        let (released, rows_out) = if self.config.keep == Keep::FirstArrived {
            let numbered = offers
                .numbered
                .into_iter()
                .map(|(rows, numbers)| with_row_numbers(rows, numbers, schema.clone()))
                .collect::<Result<Vec<_>>>()?;
            (numbered, offers.kept)
        } else {
            let rows = released.num_rows() as u64;
            (vec![numbered(released, schema)?], rows)
        };
        let rest = plan_over_released(&ctx.state(), &physical, &step_node, released)
            .map_err(plan_error)?;
        let rows = collect(rest, ctx.task_ctx()).await.map_err(plan_error)?;
        tracing::debug!(
            node = step.node,
            epoch = step.epoch,
            rows_in = offers.rows_in,
            rows_out,
            keys = opened.state.len(),
            read_ms = read.as_millis() as u64,
            offer_ms = (offered - read).as_millis() as u64,
            release_ms = (finished - offered).as_millis() as u64,
            rest_ms = (started.elapsed() - finished).as_millis() as u64,
            "dedupe epoch"
        );
        self.last = OperatorMetrics {
            rows_in: offers.rows_in,
            rows_out,
            late_rows: offers.late,
            state_rows: opened.state.len() as u64,
            state_bytes: opened.state.memory_size() as u64,
        };
        Ok(OperatorOutput {
            rows,
            replaced: Vec::new(),
            late: LateRows {
                count: offers.late,
                rows: offers.late_rows,
                dead_letter_to: self.config.late_rows_to.clone(),
                reason: LATE_BEFORE_WATERMARK,
                time_column: self.config.time_column.clone().unwrap_or_default(),
            },
        })
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let opened = self.opened.as_ref().ok_or_else(|| {
            EngineError::internal("the dedupe operator was used before it was opened")
        })?;
        Ok(StateSnapshot {
            layout: self.layout(&opened.state),
            batches: vec![opened.state.snapshot()?],
        })
    }

    fn metrics(&self) -> OperatorMetrics {
        self.last
    }
}
