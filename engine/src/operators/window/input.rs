//! The rows a window aggregates, with each row's event time carried alongside.
//!
//! DataFusion prunes the columns a window's aggregate does not use, so a TUMBLE or HOP query
//! whose aggregates never read the time column aggregates rows without it: by then each row
//! only has its window. A late row's dead letter should still say when the event happened, so
//! for sources that dead-letter late rows the projection that computes the window columns also
//! passes the time column through, as an extra last column, which the window operator strips
//! off before aggregating (the aggregate's column indices are unchanged).

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{replace_children_if_necessary, ExecutionPlan};

/// The name of the carried event-time column.
pub const EVENT_TIME_COLUMN: &str = "__weir_event_time";

/// `input` (the plan below a window's aggregate) with `time_column` appended as
/// [`EVENT_TIME_COLUMN`]; `None` when `input` already has the time column (late rows then
/// carry it themselves) or when no projection below sees it (then they have no event time).
pub fn carry_event_time(
    input: &Arc<dyn ExecutionPlan>,
    time_column: &str,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if input.schema().index_of(time_column).is_ok() {
        return Ok(None);
    }
    Ok(carry(input, time_column)?.map(|(plan, _)| plan))
}

/// `plan` changed so that its output includes the time column, with that column's index:
/// `plan` itself where it already has it, else with the column appended (as
/// [`EVENT_TIME_COLUMN`]) to the projections that drop it on the way up.
fn carry(
    plan: &Arc<dyn ExecutionPlan>,
    time_column: &str,
) -> Result<Option<(Arc<dyn ExecutionPlan>, usize)>> {
    if let Ok(index) = plan.schema().index_of(time_column) {
        return Ok(Some((plan.clone(), index)));
    }
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(None);
    };
    let Some((new_child, index)) = carry(child, time_column)? else {
        return Ok(None);
    };
    let name = new_child.schema().field(index).name().clone();
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let mut exprs = projection.expr().to_vec();
        exprs.push(ProjectionExpr {
            expr: Arc::new(Column::new(&name, index)),
            alias: EVENT_TIME_COLUMN.to_string(),
        });
        let last = exprs.len() - 1;
        return Ok(Some((
            Arc::new(ProjectionExec::try_new(exprs, new_child)?),
            last,
        )));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        // A filter may project its output; keep the time column in it.
        let Some(projection) = filter.projection() else {
            return Ok(None);
        };
        let mut columns: Vec<usize> = projection.to_vec();
        columns.push(index);
        let last = columns.len() - 1;
        let filter = FilterExecBuilder::new(filter.predicate().clone(), new_child)
            .apply_projection(Some(columns))?
            .build()?;
        return Ok(Some((Arc::new(filter), last)));
    }
    // Repartitioning and batching pass rows through unchanged.
    if plan.schema() == child.schema() {
        let index = new_child.schema().fields().len() - 1;
        let replaced = replace_children_if_necessary(plan.clone(), vec![new_child])?;
        return Ok(Some((replaced, index)));
    }
    Ok(None)
}

/// `batch` without its last column (the carried event time), ready to aggregate.
pub fn without_event_time(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = (0..batch.num_columns().saturating_sub(1)).collect();
    Ok(batch.project(&keep)?)
}
