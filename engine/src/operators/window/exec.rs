//! Runs a windowed node for one epoch: the rows below its aggregate are streamed, late rows
//! split off (and dead-lettered when asked), the rest folded into the window state; then the
//! windows the watermark closes (or, in update mode, the groups that changed) are finalised
//! and the rest of the node's plan runs over them. The state itself is `state`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::cmp::{gt, gt_eq};
use datafusion::common::ScalarValue;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{collect, execute_stream, ExecutionPlan};
use futures::StreamExt;

use super::input::{carry_event_time, without_event_time, EVENT_TIME_COLUMN};
use super::state::{UpdatedRows, WindowAggregateState};
use super::{WindowConfig, WINDOW_START};
use crate::error::{EngineError, Result};
use crate::operators::step_exec::plan_over_released;
use crate::operators::EpochStep;

/// What a windowed node produced in one epoch.
pub(super) struct WindowedOutput {
    /// Rows that reached the aggregate (late ones included).
    pub(super) rows_in: u64,
    /// The node's output rows.
    pub(super) rows: Vec<RecordBatch>,
    /// Update mode over sessions: output rows of the sessions the epoch replaced, to delete.
    pub(super) replaced: Vec<RecordBatch>,
    /// Rows that arrived after the watermark had closed their window.
    pub(super) late: u64,
    /// Those rows, when the source dead-letters late data.
    pub(super) late_rows: Vec<RecordBatch>,
    /// The column of `late_rows` that holds their event time.
    pub(super) late_time_column: String,
}

/// Runs a windowed node: its rows up to the aggregate are folded into the window state (rows
/// of windows the watermark already closed are late and left out), windows that the watermark
/// closes (or in update mode, groups that changed) are finalised, and the rest of the plan runs
/// over them.
pub(super) async fn execute_windowed(
    step: &EpochStep<'_>,
    config: &WindowConfig,
    state: &mut WindowAggregateState,
) -> Result<WindowedOutput> {
    let (ctx, epoch) = (step.ctx, step.epoch);
    let plan_error = EngineError::plan(step.node, epoch);
    let physical = ctx
        .state()
        .create_physical_plan(step.plan)
        .await
        .map_err(plan_error)?;
    // The window step; what the plan does above it runs over the rows it releases.
    let step_node = super::window_step(&physical).map_err(plan_error)?;
    let (_, input) = step_node
        .children()
        .first()
        .and_then(|aggregate| aggregate_and_input(aggregate))
        .ok_or_else(|| {
            plan_error(datafusion::error::DataFusionError::Internal(
                "the window step lost its aggregate".into(),
            ))
        })?;
    // Late rows that are dead-lettered carry their event time (see `window_input`).
    let carried = match (&config.late_rows_to, config.sessions) {
        (Some(_), false) => carry_event_time(&input, &config.time_column).map_err(plan_error)?,
        _ => None,
    };
    let carries_event_time = carried.is_some();
    let input = carried.unwrap_or(input);
    let folded = fold_input(step, config, state, input, carries_event_time).await?;
    let emitted = emit(step, config, state, folded.changed).await?;
    // The rest of the plan (projection, HAVING, ...) over the emitted aggregate rows.
    let rest_of_plan = |aggregated: Vec<RecordBatch>| {
        let physical = &physical;
        let step_node = &step_node;
        async move {
            let rest = plan_over_released(&ctx.state(), physical, step_node, aggregated)?;
            collect(rest, ctx.task_ctx()).await
        }
    };
    let rows = rest_of_plan(emitted.rows).await.map_err(plan_error)?;
    let replaced = if emitted.replaced.is_empty() {
        Vec::new()
    } else {
        rest_of_plan(emitted.replaced).await.map_err(plan_error)?
    };
    // A session starts at its row's event time.
    let late_time_column = match (config.sessions, carries_event_time) {
        (true, _) => WINDOW_START,
        (false, true) => EVENT_TIME_COLUMN,
        (false, false) => config.time_column.as_str(),
    };
    Ok(WindowedOutput {
        rows_in: folded.rows_in,
        rows,
        replaced,
        late: folded.late,
        late_rows: folded.late_rows,
        late_time_column: late_time_column.to_string(),
    })
}

/// What folding an epoch's rows into the state found.
struct Folded {
    rows_in: u64,
    late: u64,
    late_rows: Vec<RecordBatch>,
    /// In update mode, the partial states of the groups the epoch changed.
    changed: Vec<RecordBatch>,
}

/// Streams the rows below the aggregate and folds them into the state a slice at a time (a
/// HOP multiplies rows by size/slide, and an epoch's rows need never all be in memory),
/// leaving out the late ones.
async fn fold_input(
    step: &EpochStep<'_>,
    config: &WindowConfig,
    state: &mut WindowAggregateState,
    input: Arc<dyn ExecutionPlan>,
    carries_event_time: bool,
) -> Result<Folded> {
    let (ctx, plan_error) = (step.ctx, EngineError::plan(step.node, step.epoch));
    let mut rows = execute_stream(input, ctx.task_ctx()).map_err(plan_error)?;
    let mut slice = Vec::new();
    let mut slice_rows = 0;
    let mut partial = Vec::new();
    let (mut late, mut late_rows, mut rows_in) = (0u64, Vec::new(), 0u64);
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(plan_error)?;
        rows_in += batch.num_rows() as u64;
        let (on_time, late_count, late_batch) =
            drop_late(&batch, config, step, step.late_watermark_ms)?;
        let on_time = if carries_event_time {
            without_event_time(&on_time).map_err(plan_error)?
        } else {
            on_time
        };
        late += late_count;
        if config.late_rows_to.is_some() && late_count > 0 {
            late_rows.push(late_batch);
        }
        slice_rows += on_time.num_rows();
        slice.push(on_time);
        if slice_rows >= ROWS_PER_PARTIAL {
            let states = state
                .partial(std::mem::take(&mut slice), ctx.task_ctx())
                .await
                .map_err(plan_error)?;
            partial.extend(states);
            slice_rows = 0;
        }
    }
    partial.extend(
        state
            .partial(slice, ctx.task_ctx())
            .await
            .map_err(plan_error)?,
    );
    let changed = if config.update_mode {
        partial.clone()
    } else {
        Vec::new()
    };
    state
        .merge(partial, ctx.task_ctx())
        .await
        .map_err(plan_error)?;
    Ok(Folded {
        rows_in,
        late,
        late_rows,
        changed,
    })
}

/// What the state releases at the watermark: the windows it closes (append mode), or every
/// group the epoch changed (update mode, with the sessions they replaced).
async fn emit(
    step: &EpochStep<'_>,
    config: &WindowConfig,
    state: &mut WindowAggregateState,
    changed: Vec<RecordBatch>,
) -> Result<UpdatedRows> {
    let (ctx, plan_error) = (step.ctx, EngineError::plan(step.node, step.epoch));
    let end_type = state
        .state_schema()
        .field(state.window_end_index())
        .data_type()
        .clone();
    let bound = step
        .watermark_ms
        .map(|wm| timestamp_scalar(&end_type, wm))
        .transpose()
        .map_err(plan_error)?;
    if config.update_mode {
        return state
            .emit_updated(&changed, bound.as_ref(), ctx.task_ctx())
            .await
            .map_err(plan_error);
    }
    let rows = match bound {
        Some(bound) => state
            .emit_closed(&bound, ctx.task_ctx())
            .await
            .map_err(plan_error)?,
        None => Vec::new(),
    };
    Ok(UpdatedRows {
        rows,
        replaced: Vec::new(),
    })
}

/// Input rows aggregated together into partial state (bounds an epoch's window memory).
const ROWS_PER_PARTIAL: usize = 65_536;

/// Splits off the late rows of `batch`: rows whose window ended at or before the watermark,
/// or for sessions, rows whose own time is before it (so emitted sessions never change).
/// Returns the on-time rows, the number of late ones and the late rows.
fn drop_late(
    batch: &RecordBatch,
    config: &WindowConfig,
    step: &EpochStep<'_>,
    watermark: Option<i64>,
) -> Result<(RecordBatch, u64, RecordBatch)> {
    let Some(wm) = watermark else {
        return Ok((batch.clone(), 0, batch.slice(0, 0)));
    };
    let plan_error = EngineError::plan(step.node, step.epoch);
    let (column, keep_at_bound) = if config.sessions {
        (WINDOW_START, true)
    } else {
        (config.window_end.as_str(), false)
    };
    let values = batch.column(batch.schema().index_of(column)?).clone();
    let bound = timestamp_scalar(values.data_type(), wm)
        .and_then(|b| b.to_scalar())
        .map_err(plan_error)?;
    let keep = if keep_at_bound {
        gt_eq(&values, &bound)?
    } else {
        gt(&values, &bound)?
    };
    let late = (batch.num_rows() - keep.true_count()) as u64;
    let late_rows = if late > 0 {
        filter_record_batch(batch, &arrow::compute::not(&keep)?)?
    } else {
        batch.slice(0, 0)
    };
    Ok((filter_record_batch(batch, &keep)?, late, late_rows))
}

/// The topmost aggregate of a plan and the plan of the rows it aggregates (below its partial
/// phase, if it has one).
fn aggregate_and_input(
    plan: &Arc<dyn ExecutionPlan>,
) -> Option<(Arc<dyn ExecutionPlan>, Arc<dyn ExecutionPlan>)> {
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        let input = match agg.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                aggregate_and_input(agg.input()).map(|(_, input)| input)?
            }
            _ => agg.input().clone(),
        };
        return Some((plan.clone(), input));
    }
    plan.children().into_iter().find_map(aggregate_and_input)
}

/// A timestamp scalar of `data_type` for an instant in epoch milliseconds.
fn timestamp_scalar(
    data_type: &arrow::datatypes::DataType,
    ms: i64,
) -> datafusion::error::Result<ScalarValue> {
    use arrow::datatypes::{DataType, TimeUnit};
    Ok(match data_type {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            ScalarValue::TimestampSecond(Some(ms.div_euclid(1000)), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            ScalarValue::TimestampMillisecond(Some(ms), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            ScalarValue::TimestampMicrosecond(Some(ms.saturating_mul(1000)), tz.clone())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            ScalarValue::TimestampNanosecond(Some(ms.saturating_mul(1_000_000)), tz.clone())
        }
        other => {
            return Err(datafusion::error::DataFusionError::Plan(format!(
                "window_end must be a timestamp, not {other}"
            )))
        }
    })
}
