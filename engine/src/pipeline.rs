//! The micro-batch loop: plan ranges, log them, read and decode, run every node's plan in DAG
//! order, commit sinks, log the commit. One `Pipeline` is one set of SQL files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracing::{info, info_span, Instrument};

use crate::checkpoint::{
    now_rfc3339, Checkpoint, CommitEntry, OffsetEntry, CHECKPOINT_FORMAT_VERSION,
};
use crate::dead_letter::dead_letter_batch;
use crate::decode::{take_rows, JsonDecoder};
use crate::epoch_table::EpochTable;
use crate::error::{EngineError, Result};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            once: true,
            trigger_interval: Duration::from_secs(1),
            stop: Arc::new(AtomicBool::new(false)),
            on_epoch: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("once", &self.once)
            .field("trigger_interval", &self.trigger_interval)
            .field("stop", &self.stop)
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
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs epochs until no source has new data (`once`) or `stop` is set.
    pub async fn run(&mut self, options: &RunOptions) -> Result<RunSummary> {
        let mut summary = RunSummary::default();
        let history = self.checkpoint.all_offsets()?;
        let last_commit = self
            .checkpoint
            .latest_commit()?
            .map(|c| c.epoch)
            .unwrap_or(0);
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
            if ranges.is_empty() {
                if options.once {
                    break;
                }
                continue;
            }
            let entry = OffsetEntry {
                format_version: CHECKPOINT_FORMAT_VERSION,
                epoch: next_epoch,
                sources: ranges,
                planned_at: now_rfc3339(),
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
                node.table.set(vec![batch]);
            }
            // Compute every node first (downstream nodes read upstream output of this epoch)...
            let mut outputs = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let batches = execute_node(&self.ctx, node, epoch).await?;
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
            self.checkpoint.write_commit(&CommitEntry {
                format_version: CHECKPOINT_FORMAT_VERSION,
                epoch,
                committed_at: now_rfc3339(),
                rows_in: report.rows_in.clone(),
                dead_letters: report.dead_letters.clone(),
                rows_out: report.rows_out.clone(),
            })?;
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
    let plan_error = |cause| EngineError::Plan {
        node: node.name.clone(),
        epoch,
        cause,
    };
    let physical = ctx
        .state()
        .create_physical_plan(&node.plan)
        .await
        .map_err(plan_error)?;
    collect(physical, ctx.task_ctx()).await.map_err(plan_error)
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
