//! The micro-batch loop: plan ranges, log them, read and decode, run every node's plan in DAG
//! order, commit sinks, log the commit. One `Pipeline` is one set of SQL files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::cmp::gt;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::common::TableReference;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::collect;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracing::{info, info_span, Instrument};

use crate::checkpoint::{
    now_rfc3339, Checkpoint, CommitEntry, OffsetEntry, CHECKPOINT_FORMAT_VERSION,
};
use crate::dead_letter::dead_letter_batch;
use crate::decode::{take_rows, JsonDecoder};
use crate::epoch_table::EpochTable;
use crate::error::{EngineError, Result};
use crate::operators::window_aggregate::WindowAggregateState;
use crate::progress::EpochReport;
use crate::raw::constant_string;
use crate::sink::Sink;
use crate::source::{common_metadata_fields, Source};

/// A DataFusion session configured for Weir: spans for error positions, plain UTF-8 strings
/// (Delta's `string`), and one partition per core.
pub fn session_context(threads: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(threads.max(1));
    let options = config.options_mut();
    options.sql_parser.collect_spans = true;
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.parquet.schema_force_view_types = false;
    SessionContext::new_with_config(config)
}

/// Registers a stream (source, view or table) under its possibly dotted name, creating the
/// schema for `bronze.events` on first use, and returns the table that holds its epoch rows.
pub fn register_stream(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
) -> Result<Arc<EpochTable>> {
    let table = EpochTable::new(schema, ctx.copied_config().target_partitions());
    let reference = TableReference::from(name);
    if let Some(schema_name) = reference.schema() {
        let catalog_name = reference.catalog().unwrap_or("datafusion");
        if let Some(catalog) = ctx.catalog(catalog_name) {
            if catalog.schema(schema_name).is_none() {
                catalog.register_schema(schema_name, Arc::new(MemorySchemaProvider::new()))?;
            }
        }
    }
    ctx.register_table(reference, table.clone())?;
    Ok(table)
}

/// The schema a source exposes to SQL: declared columns, then the connector's metadata columns,
/// then `_source` and `_epoch`.
pub fn source_schema(declared: &Schema, connector_metadata: &[FieldRef]) -> SchemaRef {
    let mut fields: Vec<FieldRef> = declared.fields().iter().cloned().collect();
    fields.extend(connector_metadata.iter().cloned());
    fields.extend(common_metadata_fields());
    Arc::new(Schema::new(fields))
}

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
    /// For a windowed aggregate (TUMBLE / HOP): the column that ends a window. Such a node
    /// keeps its aggregate's state across epochs and emits a window once the watermark passes
    /// its end (append mode).
    pub window_end: Option<String>,
}

/// A function called with every finished epoch.
pub type EpochCallback = Arc<dyn Fn(&EpochReport) + Send + Sync>;

/// How `run` should behave.
#[derive(Clone)]
pub struct RunOptions {
    /// Process what is available now, then return.
    pub once: bool,
    /// Epochs start at most this often (and sources are polled this often when idle).
    pub trigger_interval: Duration,
    /// Set (e.g. by Ctrl-C) to finish the current epoch and return.
    pub stop: Arc<AtomicBool>,
    /// Called with every finished epoch (progress lines).
    pub on_epoch: Option<EpochCallback>,
    /// With `once`: at the end of the input, run one more epoch that treats the input as ended
    /// (the watermark passes every window), so every open window is emitted (backfills).
    pub drain: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            once: true,
            trigger_interval: Duration::from_secs(1),
            stop: Arc::new(AtomicBool::new(false)),
            on_epoch: None,
            drain: false,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("once", &self.once)
            .field("trigger_interval", &self.trigger_interval)
            .field("stop", &self.stop)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

/// What a whole run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Epochs run (including a replayed one).
    pub epochs: u64,
    /// Records read per source.
    pub rows_in: BTreeMap<String, u64>,
    /// Records dead-lettered per source.
    pub dead_letters: BTreeMap<String, u64>,
    /// Rows written per table.
    pub rows_out: BTreeMap<String, u64>,
}

/// A runnable pipeline: sources, nodes in dependency order, and its checkpoint.
pub struct Pipeline {
    name: String,
    ctx: SessionContext,
    sources: Vec<SourceNode>,
    nodes: Vec<QueryNode>,
    checkpoint: Checkpoint,
    /// Largest event time seen per source with a watermark, up to the last committed epoch.
    max_event_ms: BTreeMap<String, i64>,
    /// The watermark of the next epoch; `None` until every watermarked source has data.
    watermark_ms: Option<i64>,
    /// State of each windowed node, by node name.
    windows: BTreeMap<String, WindowAggregateState>,
}

impl Pipeline {
    /// Assembles a pipeline; `nodes` must be in dependency order (upstream first).
    pub fn new(
        name: impl Into<String>,
        ctx: SessionContext,
        sources: Vec<SourceNode>,
        nodes: Vec<QueryNode>,
        checkpoint: Checkpoint,
    ) -> Self {
        Pipeline {
            name: name.into(),
            ctx,
            sources,
            nodes,
            checkpoint,
            max_event_ms: BTreeMap::new(),
            watermark_ms: None,
            windows: BTreeMap::new(),
        }
    }

    /// The watermark from the largest event times seen: the minimum over watermarked sources
    /// of `max event time - delay`, never moving backwards.
    fn next_watermark(&self, max_event_ms: &BTreeMap<String, i64>) -> Option<i64> {
        let mut lowest: Option<i64> = None;
        for s in &self.sources {
            let Some(et) = &s.event_time else { continue };
            let candidate = max_event_ms.get(&s.name)?.saturating_sub(et.delay_ms);
            lowest = Some(lowest.map_or(candidate, |l| l.min(candidate)));
        }
        match (lowest, self.watermark_ms) {
            (Some(new), Some(old)) => Some(new.max(old)),
            (new, old) => new.or(old),
        }
    }

    /// Builds each windowed node's state from its plan and restores it from the checkpoint of
    /// `epoch` (the last committed one).
    async fn restore_windows(&mut self, epoch: u64) -> Result<()> {
        for node in &self.nodes {
            let Some(window_end) = &node.window_end else {
                continue;
            };
            let physical = self
                .ctx
                .state()
                .create_physical_plan(&node.plan)
                .await
                .map_err(EngineError::plan(&node.name, epoch))?;
            let mut state = WindowAggregateState::from_plan(&physical, window_end)
                .map_err(EngineError::plan(&node.name, epoch))?;
            if let Some(batches) = self.checkpoint.read_state(&node.name, epoch)? {
                state.restore(batches);
            }
            self.windows.insert(node.name.clone(), state);
        }
        Ok(())
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs epochs until no source has new data (`once`) or `stop` is set.
    pub async fn run(&mut self, options: &RunOptions) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        let history = self.checkpoint.all_offsets()?;
        let latest = self.checkpoint.latest_commit()?;
        let last_commit = latest.as_ref().map(|c| c.epoch).unwrap_or(0);
        if let Some(c) = &latest {
            self.max_event_ms = c.max_event_time_ms.clone();
            self.watermark_ms = c.watermark_ms;
        }
        self.restore_windows(last_commit).await?;
        let mut drained = pending_drained(&latest);
        let (committed, pending): (Vec<_>, Vec<_>) =
            history.into_iter().partition(|e| e.epoch <= last_commit);
        for node in &mut self.sources {
            let ranges: Vec<_> = committed
                .iter()
                .filter_map(|e| e.sources.get(&node.name).cloned())
                .collect();
            node.source.restore(&ranges)?;
        }
        let mut next_epoch = last_commit + 1;
        if let Some(entry) = pending.into_iter().find(|e| e.epoch == next_epoch) {
            info!(
                epoch = entry.epoch,
                "re-running the epoch that was logged but not committed"
            );
            drained |= entry.drain;
            let report = self.run_epoch(&entry, true).await?;
            self.finish_epoch(report, options, &mut summary);
            next_epoch += 1;
        }
        let mut last_start: Option<Instant> = None;
        loop {
            if options.stop.load(Ordering::SeqCst) {
                break;
            }
            // Like Spark's processing-time trigger: epochs start at most once per interval, so a
            // trickle of data makes one commit per interval, not one per record; an epoch that
            // overran its interval is followed at once. `--once` never waits.
            if let (false, Some(started)) = (options.once, last_start) {
                let next = started + options.trigger_interval;
                sleep_unless_stopped(
                    next.saturating_duration_since(Instant::now()),
                    &options.stop,
                )
                .await;
                if options.stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            last_start = Some(Instant::now());
            let mut ranges = BTreeMap::new();
            for node in &mut self.sources {
                if let Some(range) = node.source.plan_next(options.once)? {
                    ranges.insert(node.name.clone(), range);
                }
            }
            let mut drain = false;
            if ranges.is_empty() {
                let open = self.windows.values().any(|w| w.open_groups() > 0);
                if !(options.once && options.drain && open && !drained) {
                    if options.once {
                        break;
                    }
                    continue;
                }
                drain = true;
                drained = true;
            }
            let entry = OffsetEntry {
                format_version: CHECKPOINT_FORMAT_VERSION,
                epoch: next_epoch,
                sources: ranges,
                planned_at: now_rfc3339(),
                drain,
            };
            self.checkpoint.write_offsets(&entry)?;
            let report = self.run_epoch(&entry, false).await?;
            self.finish_epoch(report, options, &mut summary);
            next_epoch += 1;
        }
        Ok(summary)
    }

    fn finish_epoch(&self, report: EpochReport, options: &RunOptions, summary: &mut RunSummary) {
        summary.epochs += 1;
        for (k, v) in &report.rows_in {
            *summary.rows_in.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &report.dead_letters {
            *summary.dead_letters.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &report.rows_out {
            *summary.rows_out.entry(k.clone()).or_default() += v;
        }
        if let Some(cb) = &options.on_epoch {
            cb(&report);
        }
    }

    /// Runs one epoch over exactly the ranges of `entry` and commits it.
    async fn run_epoch(&mut self, entry: &OffsetEntry, replayed: bool) -> Result<EpochReport> {
        let started = Instant::now();
        let epoch = entry.epoch;
        let span = info_span!("epoch", epoch, pipeline = %self.name);
        let mut report = EpochReport {
            epoch,
            replayed,
            ..EpochReport::default()
        };
        // The watermark of this epoch comes from data up to the previous one (as in Spark), so a
        // replayed epoch sees the same watermark; a drain epoch closes every window.
        let watermark = if entry.drain {
            Some(i64::MAX)
        } else {
            self.watermark_ms
        };
        report.watermark_ms = watermark;
        let mut max_event_ms = self.max_event_ms.clone();
        async {
            let threads = self.ctx.copied_config().target_partitions();
            for node in &mut self.sources {
                let Some(range) = entry.sources.get(&node.name) else {
                    node.table.set(Vec::new());
                    continue;
                };
                let raw = node.source.read(range)?;
                let decoded = node.decoder.decode(&raw.data, &raw.records, threads)?;
                let mut batch =
                    take_rows_with_metadata(&decoded.batch, &decoded.kept, &raw.metadata)?;
                batch = append_common_metadata(batch, &node.name, epoch, node.table.schema_ref())?;
                report.rows_in.insert(node.name.clone(), raw.len() as u64);
                report
                    .dead_letters
                    .insert(node.name.clone(), decoded.rejected.len() as u64);
                if !decoded.rejected.is_empty() {
                    let dead = dead_letter_batch(&node.name, epoch, &raw, &decoded.rejected)?;
                    node.dead_letter
                        .write_epoch(epoch, vec![dead])
                        .await
                        .map_err(|cause| EngineError::Sink {
                            sink: node.dead_letter.describe(),
                            epoch,
                            cause,
                        })?;
                }
                if let Some(et) = &node.event_time {
                    if let Some(max) = max_timestamp_ms(&batch, &et.column) {
                        let entry = max_event_ms.entry(node.name.clone()).or_insert(max);
                        *entry = (*entry).max(max);
                    }
                }
                node.table.set(vec![batch]);
            }
            // Compute every node first (downstream nodes read upstream output of this epoch)...
            let mut outputs = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let batches = match self.windows.get_mut(&node.name) {
                    Some(state) => {
                        let (batches, late) =
                            execute_windowed(&self.ctx, node, state, epoch, watermark).await?;
                        report.late_rows.insert(node.name.clone(), late);
                        report
                            .open_windows
                            .insert(node.name.clone(), state.open_groups() as u64);
                        batches
                    }
                    None => execute_node(&self.ctx, node, epoch).await?,
                };
                node.table.set(batches.clone());
                if node.sink.is_some() {
                    outputs.push((i, batches));
                }
            }
            // ...then commit the tables concurrently: they are independent, each commit is
            // idempotent, and the commit log is written only after all of them succeeded.
            let mut commits = Vec::new();
            for (i, batches) in outputs {
                let Some(mut sink) = self.nodes[i].sink.take() else {
                    continue;
                };
                let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                commits.push(tokio::spawn(async move {
                    let result = sink.write_epoch(epoch, batches).await;
                    (i, rows, sink, result)
                }));
            }
            let mut first_error = None;
            for commit in commits {
                let (i, rows, sink, result) = commit.await.map_err(|e| EngineError::Sink {
                    sink: "a table of this pipeline".to_string(),
                    epoch,
                    cause: Box::new(e),
                })?;
                let node = &mut self.nodes[i];
                match result {
                    Ok(written) => {
                        if written.already_committed {
                            report.already_committed.push(node.name.clone());
                        }
                        report.rows_out.insert(node.name.clone(), rows);
                    }
                    Err(cause) => {
                        first_error.get_or_insert(EngineError::Sink {
                            sink: sink.describe(),
                            epoch,
                            cause,
                        });
                    }
                }
                node.sink = Some(sink);
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            for (name, state) in &self.windows {
                self.checkpoint
                    .write_state(name, epoch, state.state_schema(), state.state())?;
            }
            // After a drain the input has ended for good: later rows of any window are late.
            let next_watermark = if entry.drain {
                Some(i64::MAX)
            } else {
                self.next_watermark(&max_event_ms)
            };
            self.checkpoint.write_commit(&CommitEntry {
                format_version: CHECKPOINT_FORMAT_VERSION,
                epoch,
                committed_at: now_rfc3339(),
                rows_in: report.rows_in.clone(),
                dead_letters: report.dead_letters.clone(),
                rows_out: report.rows_out.clone(),
                max_event_time_ms: max_event_ms.clone(),
                watermark_ms: next_watermark,
                late_rows: report.late_rows.clone(),
            })?;
            self.max_event_ms = max_event_ms;
            self.watermark_ms = next_watermark;
            for node in &mut self.sources {
                if let Some(range) = entry.sources.get(&node.name) {
                    node.source.advance(range)?;
                }
                report
                    .positions
                    .insert(node.name.clone(), node.source.describe_position());
            }
            Ok::<(), EngineError>(())
        }
        .instrument(span)
        .await?;
        // Release this epoch's rows now rather than at the next epoch.
        for node in &self.sources {
            node.table.set(Vec::new());
        }
        for node in &self.nodes {
            node.table.set(Vec::new());
        }
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// Runs one node's plan over the current epoch's streams.
async fn execute_node(
    ctx: &SessionContext,
    node: &QueryNode,
    epoch: u64,
) -> Result<Vec<RecordBatch>> {
    let plan_error = EngineError::plan(&node.name, epoch);
    let physical = ctx
        .state()
        .create_physical_plan(&node.plan)
        .await
        .map_err(plan_error)?;
    collect(physical, ctx.task_ctx()).await.map_err(plan_error)
}

/// Runs a windowed node: its rows up to the aggregate are folded into the window state (rows
/// of windows the watermark already closed are late and left out), windows that the watermark
/// closes are finalised, and the rest of the plan runs over them. Returns the output and the
/// number of late rows.
async fn execute_windowed(
    ctx: &SessionContext,
    node: &QueryNode,
    state: &mut WindowAggregateState,
    epoch: u64,
    watermark: Option<i64>,
) -> Result<(Vec<RecordBatch>, u64)> {
    let plan_error = EngineError::plan(&node.name, epoch);
    let window_end = node.window_end.as_deref().unwrap_or("window_end");
    let physical = ctx
        .state()
        .create_physical_plan(&node.plan)
        .await
        .map_err(plan_error)?;
    let (aggregate, input) = aggregate_and_input(&physical).ok_or_else(|| {
        plan_error(datafusion::error::DataFusionError::Internal(
            "windowed plan lost its aggregate".into(),
        ))
    })?;
    let rows = collect(input, ctx.task_ctx()).await.map_err(plan_error)?;
    let mut on_time = Vec::with_capacity(rows.len());
    let mut late = 0u64;
    for batch in rows {
        match watermark {
            Some(wm) => {
                let ends = batch.column(batch.schema().index_of(window_end)?).clone();
                let bound = timestamp_scalar(ends.data_type(), wm).map_err(plan_error)?;
                let keep = gt(&ends, &bound.to_scalar().map_err(plan_error)?)?;
                late += (batch.num_rows() - keep.true_count()) as u64;
                on_time.push(filter_record_batch(&batch, &keep)?);
            }
            None => on_time.push(batch),
        }
    }
    state
        .update(on_time, ctx.task_ctx())
        .await
        .map_err(plan_error)?;
    let emitted = match watermark {
        Some(wm) => {
            let end_type = state
                .state_schema()
                .field(state.window_end_index())
                .data_type()
                .clone();
            let bound = timestamp_scalar(&end_type, wm).map_err(plan_error)?;
            state
                .emit_closed(&bound, ctx.task_ctx())
                .await
                .map_err(plan_error)?
        }
        None => Vec::new(),
    };
    let emitted_plan = MemorySourceConfig::try_new_exec(&[emitted], aggregate.schema(), None)
        .map_err(plan_error)?;
    let rest = replace_plan(&physical, &aggregate, emitted_plan).map_err(plan_error)?;
    let out = collect(rest, ctx.task_ctx()).await.map_err(plan_error)?;
    Ok((out, late))
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

/// `plan` with the node `target` replaced by `replacement`.
fn replace_plan(
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    replacement: Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    if Arc::ptr_eq(plan, target) {
        return Ok(replacement);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| replace_plan(c, target, replacement.clone()))
        .collect::<datafusion::error::Result<_>>()?;
    if children.is_empty() {
        return Ok(plan.clone());
    }
    datafusion::physical_plan::replace_children_if_necessary(plan.clone(), children)
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

/// The largest value of a millisecond timestamp column, if any.
fn max_timestamp_ms(batch: &RecordBatch, column: &str) -> Option<i64> {
    let array = batch.column(batch.schema().index_of(column).ok()?);
    let ts = array.as_any().downcast_ref::<TimestampMillisecondArray>()?;
    arrow::compute::max(ts)
}

/// Whether the last committed epoch was a drain (then a restart must not drain again).
fn pending_drained(latest: &Option<CommitEntry>) -> bool {
    latest
        .as_ref()
        .is_some_and(|c| c.watermark_ms == Some(i64::MAX))
}

/// Joins decoded columns with the metadata columns of the kept records.
fn take_rows_with_metadata(
    decoded: &RecordBatch,
    kept: &[u32],
    metadata: &[(FieldRef, ArrayRef)],
) -> Result<RecordBatch> {
    let mut fields: Vec<FieldRef> = decoded.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
    if !metadata.is_empty() {
        let meta_schema = Arc::new(Schema::new(
            metadata.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        ));
        let meta = RecordBatch::try_new(
            meta_schema,
            metadata.iter().map(|(_, a)| a.clone()).collect(),
        )?;
        let meta = take_rows(&meta, kept)?;
        fields.extend(meta.schema().fields().iter().cloned());
        columns.extend(meta.columns().iter().cloned());
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Adds `_source` and `_epoch`, and stamps the batch with the stream's registered schema.
fn append_common_metadata(
    batch: RecordBatch,
    source: &str,
    epoch: u64,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns.push(constant_string(source, n));
    columns.push(Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
        epoch as i64,
        n,
    ))));
    Ok(RecordBatch::try_new(schema, columns)?)
}

async fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let deadline = Instant::now() + total;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(step.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
