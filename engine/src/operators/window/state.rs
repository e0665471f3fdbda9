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
//! Session windows use the same state. Each input row arrives as its own session
//! `[time, time + gap)`; before merging, every state row's window is widened to the union of
//! the overlapping sessions of its group keys (Spark's rule: a row joins a session when it is
//! less than `gap` after the session's last event, and may bridge two sessions into one). Rows
//! that now share a window are merged by `PartialReduce` like any other group.
//!
//! In update output mode a merge can replace sessions that were already emitted (two sessions
//! bridged into one, or a session widened): their rows must leave the table. The operator keeps
//! the partial states of those replaced sessions and reports them with the updated rows, so the
//! sink can delete them in the same commit.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::cmp::{gt, lt_eq};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::udaf::AggregateFunctionExpr;
use datafusion::physical_plan::{collect, ExecutionPlan, PhysicalExpr};

use super::guard::check_input_is_row_by_row;
use super::sessions::{as_int64, merge_sessions, session_key_rows, SessionColumns};

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
    /// For session windows: how to find sessions to merge.
    sessions: Option<SessionColumns>,
    /// Partial states of the open groups, one row per (window, keys).
    state: Vec<RecordBatch>,
    /// Whether merges record the sessions they replace (update output mode).
    track_replaced: bool,
    /// Partial states of sessions that merges replaced since the last `emit_updated`.
    replaced: Vec<RecordBatch>,
    /// The window, group keys and aggregates as text: a checkpoint records it and refuses to
    /// restore state built for another definition.
    definition: String,
}

/// What update output mode emits for one epoch.
#[derive(Debug, Default)]
pub struct UpdatedRows {
    /// The current value of every (window, keys) group the epoch changed.
    pub rows: Vec<RecordBatch>,
    /// For sessions: the last emitted value of every session the epoch replaced (merged into
    /// another one or widened); those rows must be deleted from the table.
    pub replaced: Vec<RecordBatch>,
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
        check_input_is_row_by_row(source.input())?;
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
            sessions: None,
            state: Vec::new(),
            track_replaced: false,
            replaced: Vec::new(),
            definition: String::new(),
        }
        .with_window_definition(""))
    }

    /// Records how rows are windowed (`TUMBLE on ts: size 1min`) in the state's definition,
    /// next to its group keys and aggregates.
    pub fn with_window_definition(mut self, window: &str) -> Self {
        let keys: Vec<&str> = self.state_schema.fields()[..self.group_by.expr().len()]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        // An aggregate's name is its SQL, FILTER clause included: `sum(ev.x) FILTER (WHERE ...)`.
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        self.definition = format!(
            "{window}; GROUP BY {}; {}",
            keys.join(", "),
            aggregates.join(", ")
        );
        self
    }

    /// The window, group keys and aggregates as text (see [`Self::with_window_definition`]).
    pub fn definition(&self) -> &str {
        &self.definition
    }

    /// Treats windows as sessions, merged when they overlap for the same group keys;
    /// `window_start_column` must be a group key.
    pub fn with_sessions(mut self, window_start_column: &str) -> Result<Self> {
        let window_start = self
            .state_schema
            .index_of(window_start_column)
            .map_err(|_| {
                DataFusionError::Plan(format!(
                    "GROUP BY must include `{window_start_column}` (the session)"
                ))
            })?;
        let keys = (0..self.group_by.expr().len())
            .filter(|i| *i != window_start && *i != self.window_end)
            .collect();
        self.sessions = Some(SessionColumns { window_start, keys });
        Ok(self)
    }

    /// Records, for update output mode, the already emitted sessions that merges replace, so
    /// [`Self::emit_updated`] can report them for deletion. Other windows never change
    /// identity, so this only matters for sessions.
    pub fn with_replaced_sessions(mut self) -> Self {
        self.track_replaced = self.sessions.is_some();
        self
    }

    /// Whether windows are merged sessions.
    pub fn is_session(&self) -> bool {
        self.sessions.is_some()
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
        let partial = self.partial(input, task.clone()).await?;
        self.merge(partial, task).await
    }

    /// Aggregates some of an epoch's input rows into partial states (not yet in the state), so
    /// an epoch's rows can be folded a slice at a time instead of all held in memory.
    pub async fn partial(
        &self,
        input: Vec<RecordBatch>,
        task: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        if input.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        let partial = self.aggregate(
            AggregateMode::Partial,
            memory(input, self.input_schema.clone())?,
        )?;
        collect(partial, task).await
    }

    /// Merges partial states (from `partial`) into the state.
    pub async fn merge(
        &mut self,
        mut partial: Vec<RecordBatch>,
        task: Arc<TaskContext>,
    ) -> Result<()> {
        if partial.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let before = if self.track_replaced {
            self.state.clone()
        } else {
            Vec::new()
        };
        partial.append(&mut self.state);
        let mut states = partial;
        if let Some(sessions) = &self.sessions {
            states = vec![merge_sessions(
                &self.state_schema,
                &states,
                sessions,
                self.window_end,
            )?];
        }
        let reduce = self.aggregate(
            AggregateMode::PartialReduce,
            memory(states, self.state_schema.clone())?,
        )?;
        self.state = collect(reduce, task).await?;
        if !before.is_empty() {
            let replaced = self.groups_not_in_state(&before)?;
            self.replaced.extend(replaced);
        }
        Ok(())
    }

    /// The rows of `batches` whose (window, keys) group is no longer in the state.
    fn groups_not_in_state(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let converter = self.group_converter()?;
        let mut present = std::collections::HashSet::new();
        for batch in &self.state {
            let rows = converter.convert_columns(&self.group_columns(batch))?;
            present.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
        let mut gone = Vec::new();
        for batch in batches {
            let rows = converter.convert_columns(&self.group_columns(batch))?;
            let mask: BooleanArray = rows
                .iter()
                .map(|r| Some(!present.contains(r.as_ref())))
                .collect();
            let rows = filter_record_batch(batch, &mask)?;
            if rows.num_rows() > 0 {
                gone.push(rows);
            }
        }
        Ok(gone)
    }

    /// Turns a state batch's group columns (window and keys) into comparable rows.
    fn group_converter(&self) -> Result<RowConverter> {
        let fields: Vec<SortField> = (0..self.group_by.expr().len())
            .map(|i| SortField::new(self.state_schema.field(i).data_type().clone()))
            .collect();
        Ok(RowConverter::new(fields)?)
    }

    /// Each row's session keys (the group keys but the window) as comparable bytes; empty
    /// when sessions have no other key.
    fn session_keys(&self, batch: &RecordBatch, sessions: &SessionColumns) -> Result<Vec<Vec<u8>>> {
        Ok(
            match session_key_rows(&self.state_schema, batch, sessions)? {
                Some(rows) => rows.iter().map(|r| r.as_ref().to_vec()).collect(),
                None => vec![Vec::new(); batch.num_rows()],
            },
        )
    }

    /// The group columns (window and keys) of a state batch.
    fn group_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        batch.columns()[..self.group_by.expr().len()].to_vec()
    }

    /// Update output mode: the current final rows of every group that `changed` (this epoch's
    /// partial states, from `partial`) touched, after they were merged in with `merge`, and
    /// the last rows of the sessions those merges replaced. Groups whose window ends at or
    /// before `watermark` are then evicted without being emitted again: their last value was
    /// emitted in the epoch that last changed them.
    pub async fn emit_updated(
        &mut self,
        changed: &[RecordBatch],
        watermark: Option<&ScalarValue>,
        task: Arc<TaskContext>,
    ) -> Result<UpdatedRows> {
        let mut updated = Vec::new();
        match &self.sessions {
            None => {
                let converter = self.group_converter()?;
                let mut touched = std::collections::HashSet::new();
                for batch in changed.iter().filter(|b| b.num_rows() > 0) {
                    let rows = converter.convert_columns(&self.group_columns(batch))?;
                    touched.extend(rows.iter().map(|r| r.as_ref().to_vec()));
                }
                for batch in &self.state {
                    let rows = converter.convert_columns(&self.group_columns(batch))?;
                    let mask: BooleanArray = rows
                        .iter()
                        .map(|r| Some(touched.contains(r.as_ref())))
                        .collect();
                    updated.push(filter_record_batch(batch, &mask)?);
                }
            }
            Some(sessions) => {
                // A changed row carries its own span, not its merged session's: a session
                // changed when a row of its keys starts inside it.
                let mut starts: std::collections::HashMap<Vec<u8>, Vec<i64>> =
                    std::collections::HashMap::new();
                for batch in changed.iter().filter(|b| b.num_rows() > 0) {
                    let begin = as_int64(batch.column(sessions.window_start))?;
                    for (i, key) in self.session_keys(batch, sessions)?.into_iter().enumerate() {
                        starts.entry(key).or_default().push(begin.value(i));
                    }
                }
                starts.values_mut().for_each(|v| v.sort_unstable());
                for batch in &self.state {
                    let keys = self.session_keys(batch, sessions)?;
                    let (begin, end) = (
                        as_int64(batch.column(sessions.window_start))?,
                        as_int64(batch.column(self.window_end))?,
                    );
                    let mask: BooleanArray = keys
                        .iter()
                        .enumerate()
                        .map(|(i, key)| {
                            Some(starts.get(key).is_some_and(|s| {
                                let first = s.partition_point(|&t| t < begin.value(i));
                                first < s.len() && s[first] < end.value(i)
                            }))
                        })
                        .collect();
                    updated.push(filter_record_batch(batch, &mask)?);
                }
            }
        }
        updated.retain(|b| b.num_rows() > 0);
        if let Some(watermark) = watermark {
            // Evict closed windows; their rows were emitted when they last changed.
            self.evict_closed(watermark)?;
        }
        let replaced = std::mem::take(&mut self.replaced);
        Ok(UpdatedRows {
            rows: self.finalize(updated, task.clone()).await?,
            replaced: self.finalize(replaced, task).await?,
        })
    }

    /// Evaluates and evicts every group whose window ends at or before `watermark` (a value of
    /// the window_end column's type); returns their final rows.
    pub async fn emit_closed(
        &mut self,
        watermark: &ScalarValue,
        task: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let closed = self.evict_closed(watermark)?;
        self.finalize(closed, task).await
    }

    /// Removes every group whose window ends at or before `watermark` from the state and
    /// returns their partial states.
    fn evict_closed(&mut self, watermark: &ScalarValue) -> Result<Vec<RecordBatch>> {
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
        Ok(closed)
    }

    /// Evaluates partial states into the query's aggregate values.
    async fn finalize(
        &self,
        states: Vec<RecordBatch>,
        task: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let finalize = self.aggregate(
            AggregateMode::Final,
            memory(states, self.state_schema.clone())?,
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
    use datafusion::prelude::SessionContext;

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
        let ctx = crate::runtime::session_context(2);
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

    /// Rows of one epoch as one-row sessions `[t, t + gap)`: (second, key, x).
    fn session_epoch(rows: &[(i64, &str, f64)], gap_s: i64) -> RecordBatch {
        let start: Vec<i64> = rows.iter().map(|r| r.0 * 1000).collect();
        let end: Vec<i64> = rows.iter().map(|r| (r.0 + gap_s) * 1000).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(start).with_timezone("UTC")),
                Arc::new(TimestampMillisecondArray::from(end).with_timezone("UTC")),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "u"))),
            ],
        )
        .unwrap()
    }

    /// Session state for `count(*), sum(x)` per key `k`, planned by DataFusion.
    async fn count_and_sum_sessions() -> (SessionContext, WindowAggregateState) {
        let query = "SELECT window_start, window_end, k, count(*), sum(x) FROM events \
                     GROUP BY window_start, window_end, k";
        let ctx = crate::runtime::session_context(2);
        ctx.register_table(
            "events",
            Arc::new(MemTable::try_new(schema(), vec![vec![]]).unwrap()),
        )
        .unwrap();
        let plan = ctx
            .sql(query)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let state = WindowAggregateState::from_plan(&plan, "window_end")
            .unwrap()
            .with_sessions("window_start")
            .unwrap();
        (ctx, state)
    }

    #[tokio::test]
    async fn a_later_row_bridges_two_sessions_into_one() {
        let (ctx, mut state) = count_and_sum_sessions().await;
        // Gap 60 s. Key a: events at 0 s and 100 s are two sessions; key b: one at 30 s.
        let gap = 60;
        state
            .update(
                vec![session_epoch(
                    &[(0, "a", 1.0), (100, "a", 2.0), (30, "b", 5.0)],
                    gap,
                )],
                ctx.task_ctx(),
            )
            .await
            .unwrap();
        assert_eq!(state.open_groups(), 3);
        // An event at 50 s (less than 60 s after 0 s and before 100 s) bridges a's sessions.
        state
            .update(vec![session_epoch(&[(50, "a", 4.0)], gap)], ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(state.open_groups(), 2);
        let end = ScalarValue::TimestampMillisecond(Some(i64::MAX), Some("UTC".into()));
        let emitted = rows(&state.emit_closed(&end, ctx.task_ctx()).await.unwrap());
        assert_eq!(
            emitted,
            vec![
                "1970-01-01T00:00:00Z|1970-01-01T00:02:40Z|a|3|7.000000".to_string(),
                "1970-01-01T00:00:30Z|1970-01-01T00:01:30Z|b|1|5.000000".to_string(),
            ]
        );
    }

    /// Update mode: the bridging row emits the merged session and reports the two sessions it
    /// replaced (with their last emitted values); the untouched session of b is not emitted.
    #[tokio::test]
    async fn update_mode_reports_the_sessions_a_bridge_replaced() {
        let (ctx, state) = count_and_sum_sessions().await;
        let mut state = state.with_replaced_sessions();
        let gap = 60;
        let task = ctx.task_ctx();
        let mut epoch = async |events: &[(i64, &str, f64)]| {
            let partial = state
                .partial(vec![session_epoch(events, gap)], task.clone())
                .await
                .unwrap();
            state.merge(partial.clone(), task.clone()).await.unwrap();
            let out = state
                .emit_updated(&partial, None, task.clone())
                .await
                .unwrap();
            (rows(&out.rows), rows(&out.replaced))
        };
        let (first, replaced) = epoch(&[(0, "a", 1.0), (100, "a", 2.0), (30, "b", 5.0)]).await;
        assert_eq!(first.len(), 3);
        assert!(replaced.is_empty());
        let (second, replaced) = epoch(&[(50, "a", 4.0)]).await;
        assert_eq!(
            second,
            vec!["1970-01-01T00:00:00Z|1970-01-01T00:02:40Z|a|3|7.000000".to_string()]
        );
        assert_eq!(
            replaced,
            vec![
                "1970-01-01T00:00:00Z|1970-01-01T00:01:00Z|a|1|1.000000".to_string(),
                "1970-01-01T00:01:40Z|1970-01-01T00:02:40Z|a|1|2.000000".to_string(),
            ]
        );
        // A row inside the merged session changes its value, not its span: nothing replaced.
        let (third, replaced) = epoch(&[(60, "a", 1.0)]).await;
        assert_eq!(
            third,
            vec!["1970-01-01T00:00:00Z|1970-01-01T00:02:40Z|a|4|8.000000".to_string()]
        );
        assert!(replaced.is_empty());
    }
}
