//! Rows that make a query fail are dead letters, not a pipeline stopped for good.
//!
//! A per-row runtime error in SQL (`CAST('a' AS INT)`, a division by zero, a bad regex
//! argument) fails the whole plan, and a replay of the epoch fails the same way. Like Spark
//! users with ANSI mode off expect, the pipeline goes on: the node's input rows are split in
//! halves and re-run until the failing rows are found; those become dead letters with the
//! table and the error, the others give the node's output. Replays split the same rows the same
//! way, so the result is deterministic. This applies to nodes without a window that read one
//! stream and join nothing (a join over half of a stream would lose matches); elsewhere the
//! error still stops the run.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::error::ArrowError;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;

use crate::runtime::epoch_table::EpochTable;

/// The one stream a node reads, where its failing rows can be isolated.
#[derive(Debug, Clone)]
pub struct RowInput {
    /// The stream's rows of this epoch.
    pub table: Arc<EpochTable>,
    /// The stream's name, for dead letters' `position`.
    pub name: String,
    /// The source whose dead-letter table receives the failing rows.
    pub source: String,
}

/// A row the node's query failed on, with the error.
#[derive(Debug, Clone)]
pub struct FailedRow {
    /// The input row (one row).
    pub row: RecordBatch,
    /// What the query said.
    pub error: String,
}

/// Whether `error` can come from the values of one row (a cast, arithmetic, a function's
/// argument) rather than from the plan or the machine.
pub fn is_row_error(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::ArrowError(e, _) => matches!(
            e.as_ref(),
            ArrowError::CastError(_)
                | ArrowError::ComputeError(_)
                | ArrowError::DivideByZero
                | ArrowError::ParseError(_)
                | ArrowError::InvalidArgumentError(_)
                | ArrowError::ArithmeticOverflow(_)
        ),
        DataFusionError::Execution(_) => true,
        _ => false,
    }
}

/// Whether `plan` can be re-run over part of its input with the same result for those rows:
/// it joins nothing.
pub fn splittable(plan: &LogicalPlan) -> bool {
    let mut joins = false;
    let _ = plan.apply_with_subqueries(|node| {
        if matches!(node, LogicalPlan::Join(_)) {
            joins = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    !joins
}

/// Runs `plan` over halves of `input`'s rows until every failing row is found; returns the
/// output of the good rows and the failing rows. The input's rows are restored afterwards. If
/// every row fails on its own, the error is not about rows: it is returned.
pub async fn run_isolating_bad_rows(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    input: &RowInput,
    error: DataFusionError,
) -> Result<(Vec<RecordBatch>, Vec<FailedRow>)> {
    let all = input.table.rows();
    let schema = input.table.schema_ref();
    let rows = concat_batches(&schema, &all)?;
    let mut output = Vec::new();
    let mut failed = Vec::new();
    // Ranges still to run, first half first so output keeps the input's order.
    let mut todo = vec![(0, rows.num_rows())];
    let result = async {
        while let Some((start, len)) = todo.pop() {
            input.table.set(vec![rows.slice(start, len)]);
            match run(ctx, plan).await {
                Ok(batches) => output.extend(batches),
                Err(e) if len == 1 && is_row_error(&e) => failed.push(FailedRow {
                    row: rows.slice(start, 1),
                    error: e.find_root().to_string(),
                }),
                Err(e) if len == 1 || !is_row_error(&e) => return Err(e),
                Err(_) => {
                    let half = len / 2;
                    todo.push((start + half, len - half));
                    todo.push((start, half));
                }
            }
        }
        Ok(())
    }
    .await;
    input.table.set(all);
    result?;
    if failed.len() == rows.num_rows() {
        return Err(error);
    }
    Ok((output, failed))
}

async fn run(ctx: &SessionContext, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
    let physical = ctx.state().create_physical_plan(plan).await?;
    collect(physical, ctx.task_ctx()).await
}
