//! Window aggregation state: partial aggregates per (window, group key), kept across epochs.
//!
//! Input: rows that already carry `window_start` / `window_end` (what TUMBLE / HOP produce),
//! as they arrive in each epoch. State: for every open (window, keys) group, the *partial state*
//! of each aggregate, as DataFusion's own accumulators define it (`Accumulator::state`), stored
//! as Arrow batches. Every epoch the new rows are aggregated in `Partial` mode and merged into the
//! state with `PartialReduce` (state in, state out); when the watermark passes a window's end,
//! that window's groups are evaluated with `Final` mode, emitted and evicted. So every DataFusion
//! aggregate works (count distinct, approx_percentile_cont, array_agg, ...) without ever
//! re-reading raw rows, and state holds one row per open group.
//!
//! Not wired into pipelines yet: this is the state core of issue 3's WindowAggregate operator.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::cmp::{gt, lt_eq};
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::udaf::AggregateFunctionExpr;
use datafusion::physical_plan::{collect, ExecutionPlan, PhysicalExpr};

/// The aggregation a windowed query performs, and the state of its open windows.
#[derive(Debug)]
pub struct WindowAggregateState {
    /// Group expressions over the input rows (they include window_start and window_end).
    group_by: PhysicalGroupBy,
    /// The aggregate functions.
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// FILTER clauses, applied when input rows are aggregated.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Schema of the input rows.
    input_schema: SchemaRef,
    /// Schema of the partial states (group columns, then each aggregate's state columns).
    state_schema: SchemaRef,
    /// Index of `window_end` in the state schema.
    window_end: usize,
    /// Partial states of the open groups, one row per (window, keys).
    state: Vec<RecordBatch>,
}

impl WindowAggregateState {
    /// Takes the aggregation of the topmost `AggregateExec` in `plan` (as DataFusion planned the
    /// windowed query), whose group keys must include `window_end_column`.
    pub fn from_plan(plan: &Arc<dyn ExecutionPlan>, window_end_column: &str) -> Result<Self> {
        let top = find_aggregate(plan).ok_or_else(|| {
            DataFusionError::Plan("the windowed query has no GROUP BY aggregate".into())
        })?;
        // A two-phase plan keeps the input-side aggregation in its Partial node.
        let source = match top.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => find_aggregate(top.input())
                .filter(|a| *a.mode() == AggregateMode::Partial)
                .ok_or_else(|| {
                    DataFusionError::Internal("final aggregate without a partial one".into())
                })?,
            _ => top,
        };
        let group_by = source.group_expr().clone();
        let probe = AggregateExec::try_new(
            AggregateMode::Partial,
            group_by.clone(),
            source.aggr_expr().to_vec(),
            source.filter_expr().to_vec(),
            empty_input(source.input_schema())?,
            source.input_schema(),
        )?;
        let state_schema = probe.schema();
        let window_end = state_schema.index_of(window_end_column).map_err(|_| {
            DataFusionError::Plan(format!(
                "GROUP BY must include `{window_end_column}` (the window)"
            ))
        })?;
        Ok(WindowAggregateState {
            group_by,
            aggregates: source.aggr_expr().to_vec(),
            filters: source.filter_expr().to_vec(),
            input_schema: source.input_schema(),
            state_schema,
            window_end,
            state: Vec::new(),
        })
    }

    /// Schema of the state batches (what a checkpoint stores).
    pub fn state_schema(&self) -> &SchemaRef {
        &self.state_schema
    }

    /// Index of `window_end` in the state schema.
    pub fn window_end_index(&self) -> usize {
        self.window_end
    }

    /// Number of open (window, keys) groups held.
    pub fn open_groups(&self) -> usize {
        self.state.iter().map(|b| b.num_rows()).sum()
    }

    /// The state, for checkpoints.
    pub fn state(&self) -> &[RecordBatch] {
        &self.state
    }

    /// Replaces the state, when restoring a checkpoint.
    pub fn restore(&mut self, state: Vec<RecordBatch>) {
        self.state = state;
    }

    fn aggregate(
        &self,
        mode: AggregateMode,
        input: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (group_by, filters) = match mode {
            AggregateMode::Partial => (self.group_by.clone(), self.filters.clone()),
            _ => (self.group_by.as_final(), vec![None; self.aggregates.len()]),
        };
        Ok(Arc::new(AggregateExec::try_new(
            mode,
            group_by,
            self.aggregates.clone(),
            filters,
            input,
            self.input_schema.clone(),
        )?))
    }

    /// Folds an epoch's input rows into the state.
    pub async fn update(&mut self, input: Vec<RecordBatch>, task: Arc<TaskContext>) -> Result<()> {
        if input.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let partial = self.aggregate(
            AggregateMode::Partial,
            memory(input, self.input_schema.clone())?,
        )?;
        let mut states = collect(partial, task.clone()).await?;
        states.append(&mut self.state);
        let reduce = self.aggregate(
            AggregateMode::PartialReduce,
            memory(states, self.state_schema.clone())?,
        )?;
        self.state = collect(reduce, task).await?;
        Ok(())
    }

    /// Evaluates and evicts every group whose window ends at or before `watermark` (a value of
    /// the window_end column's type); returns their final rows.
    pub async fn emit_closed(
        &mut self,
        watermark: &ScalarValue,
        task: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let mut closed = Vec::new();
        let mut open = Vec::new();
        let bound = watermark.to_scalar()?;
        for batch in self.state.drain(..) {
            let ends = batch.column(self.window_end);
            let is_closed: BooleanArray = lt_eq(ends, &bound)?;
            let is_open: BooleanArray = gt(ends, &bound)?;
            closed.push(filter_record_batch(&batch, &is_closed)?);
            open.push(filter_record_batch(&batch, &is_open)?);
        }
        self.state = open.into_iter().filter(|b| b.num_rows() > 0).collect();
        closed.retain(|b| b.num_rows() > 0);
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let finalize = self.aggregate(
            AggregateMode::Final,
            memory(closed, self.state_schema.clone())?,
        )?;
        collect(finalize, task).await
    }
}

/// The topmost aggregate of a plan.
fn find_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        return Some(agg);
    }
    plan.children().into_iter().find_map(find_aggregate)
}

fn memory(batches: Vec<RecordBatch>, schema: SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    Ok(MemorySourceConfig::try_new_exec(&[batches], schema, None)?)
}

fn empty_input(schema: SchemaRef) -> Result<Arc<dyn ExecutionPlan>> {
    memory(Vec::new(), schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::util::display::array_value_to_string;
    use datafusion::datasource::MemTable;

    const MINUTE: i64 = 60_000;

    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("k", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
            Field::new("u", DataType::Utf8, true),
        ]))
    }

    /// Rows of one epoch: (minute of the window, key, x, u).
    fn epoch(rows: &[(i64, &str, f64, &str)]) -> RecordBatch {
        let start: Vec<i64> = rows.iter().map(|r| r.0 * MINUTE).collect();
        let end: Vec<i64> = rows.iter().map(|r| (r.0 + 1) * MINUTE).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(start).with_timezone("UTC")),
                Arc::new(TimestampMillisecondArray::from(end).with_timezone("UTC")),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap()
    }

    /// Rows as text, floats rounded, sorted: a multiset to compare answers by.
    fn rows(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            for r in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| match c.as_any().downcast_ref::<Float64Array>() {
                        Some(f) => format!("{:.6}", f.value(r)),
                        None => array_value_to_string(c, r).unwrap(),
                    })
                    .collect();
                out.push(cells.join("|"));
            }
        }
        out.sort();
        out
    }

    const QUERY: &str =
        "SELECT window_start, window_end, k, count(*), sum(x), avg(x), min(x), max(x), \
        stddev(x), count(DISTINCT u), approx_distinct(u), count(x) FILTER (WHERE x > 2) \
        FROM events GROUP BY window_start, window_end, k";

    #[tokio::test]
    async fn epochs_of_partial_state_equal_one_batch_aggregation() {
        let epochs = vec![
            epoch(&[
                (0, "a", 1.0, "p"),
                (0, "b", 2.0, "q"),
                (1, "a", 3.0, "p"),
                (0, "a", 4.0, "r"),
            ]),
            epoch(&[(0, "a", 5.0, "p"), (1, "a", 6.0, "s"), (2, "b", 7.0, "q")]),
            epoch(&[
                (1, "b", 8.0, "t"),
                (2, "b", 9.0, "q"),
                (3, "a", 1.5, "p"),
                (1, "a", 2.5, "p"),
            ]),
        ];
        let ctx = crate::pipeline::session_context(2);
        let all = MemTable::try_new(schema(), vec![epochs.clone()]).unwrap();
        ctx.register_table("events", Arc::new(all)).unwrap();
        let expected = rows(&ctx.sql(QUERY).await.unwrap().collect().await.unwrap());

        let plan = ctx
            .sql(QUERY)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut state = WindowAggregateState::from_plan(&plan, "window_end").unwrap();
        let mut emitted = Vec::new();
        // The watermark after each epoch: minute 1 closes window 0 after epoch 2 only.
        let watermarks = [0, MINUTE, 2 * MINUTE];
        for (batch, wm) in epochs.into_iter().zip(watermarks) {
            state.update(vec![batch], ctx.task_ctx()).await.unwrap();
            let wm = ScalarValue::TimestampMillisecond(Some(wm), Some("UTC".into()));
            emitted.extend(state.emit_closed(&wm, ctx.task_ctx()).await.unwrap());
        }
        // Windows 0 and 1 (ending at minutes 1 and 2) closed; 2 and 3 are still open.
        assert_eq!(rows(&emitted).len(), 4, "{:?}", rows(&emitted));
        assert_eq!(state.open_groups(), 2);
        let end = ScalarValue::TimestampMillisecond(Some(i64::MAX), Some("UTC".into()));
        emitted.extend(state.emit_closed(&end, ctx.task_ctx()).await.unwrap());
        assert_eq!(state.open_groups(), 0);
        assert_eq!(rows(&emitted), expected);
    }
}
