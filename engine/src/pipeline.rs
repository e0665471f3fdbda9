//! The micro-batch loop: plan ranges, log them, read and decode, run every node's plan in DAG
//! order, commit sinks, log the commit. One `Pipeline` is one set of SQL files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracing::{info, info_span, Instrument};

use crate::checkpoint::{
    now_rfc3339, Checkpoint, CommitEntry, EpochFailure, OffsetEntry, RunLock,
    CHECKPOINT_FORMAT_VERSION,
};
use crate::crash_point::crash_point;
use crate::dead_letter::{late_rows_batch, LateRows as LateRowsOf};
use crate::decode::JsonDecoder;
use crate::epoch_table::EpochTable;
use crate::error::{EngineError, Result};
use crate::ingest::{EpochInput, SourceReader};
use crate::operators::row_errors::{is_row_error, run_isolating_bad_rows, RowInput};
use crate::operators::{EpochStep, OperatorOutput, StreamOperator};
use crate::progress::EpochReport;
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
    let ctx = SessionContext::new_with_config(config);
    // This rule turns a lone `count(DISTINCT x)` into GROUP BY (keys, x) under an outer count.
    // The window operator keeps only the outer aggregate as state, so the inner one would run
    // per epoch and a value seen in two epochs would be counted twice. Without the rule the
    // aggregate keeps its distinct set as state and merges it across epochs.
    ctx.remove_optimizer_rule(SINGLE_DISTINCT_TO_GROUP_BY);
    // `count(DISTINCT)` over strings with one accumulator for all groups, not one per group.
    ctx.register_udaf(crate::count_distinct::compact_count());
    ctx
}

/// DataFusion's name for the optimizer rule that rewrites a single distinct aggregate.
const SINGLE_DISTINCT_TO_GROUP_BY: &str = "single_distinct_aggregation_to_group_by";

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
    /// The stream `_dead_letter.<source>` that queries of the pipeline read: each epoch's dead
    /// letters of this source (undecodable records, and late rows of windowed nodes that ran
    /// before the reading node; the planner orders readers after every other node).
    pub dead_letter_stream: Arc<EpochTable>,
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
    /// After this long without new rows the source stops holding the watermark back, so one
    /// quiet source (or Kafka partition) does not stall every window.
    pub idle_timeout: Duration,
    /// A row whose event time is more than this after the wall clock is a dead letter
    /// (`max_event_time_ahead`, default a day; `None` when set to 'none').
    pub max_ahead: Option<Duration>,
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
    /// The table's stateful step (a window), kept across epochs; `None` for a stateless
    /// table or view, whose plan runs over each epoch's rows alone.
    pub operator: Option<Box<dyn StreamOperator>>,
    /// For a stateless node that reads one stream and joins nothing: that stream, so rows its
    /// query fails on can be found and dead-lettered (see `row_errors`).
    pub row_input: Option<RowInput>,
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
    /// For tables that MERGE (update output mode): how many of their rows were new rows of the
    /// table; the rest of `rows_out` replaced existing rows.
    pub rows_new: BTreeMap<String, u64>,
}

/// A source at run time; its dead-letter sink lives in `Pipeline::dead_letters` so it can be
/// committed alongside the tables.
struct RunningSource {
    name: String,
    source: Box<dyn Source>,
    decoder: JsonDecoder,
    table: Arc<EpochTable>,
    event_time: Option<EventTime>,
    /// When each of the source's partitions (the key in `max_event_ms`) last delivered rows;
    /// partitions not seen in this run count from its start.
    last_data: BTreeMap<String, Instant>,
}

/// The next epoch's input, read while the previous epoch was computed and committed.
struct Prefetched {
    ranges: BTreeMap<String, serde_json::Value>,
    planned_at: Instant,
    input: EpochInput,
}

/// Which sink a commit task holds, so it can be put back.
#[derive(Debug, Clone)]
enum SinkSlot {
    Table(usize),
    DeadLetter(String),
}

/// A runnable pipeline: sources, nodes in dependency order, and its checkpoint.
pub struct Pipeline {
    name: String,
    ctx: SessionContext,
    sources: Vec<RunningSource>,
    /// Dead-letter sink per source name (`None` only while a commit task holds it).
    dead_letters: BTreeMap<String, Option<Box<dyn Sink>>>,
    /// The `_dead_letter.<source>` stream per source name.
    dead_letter_streams: BTreeMap<String, Arc<EpochTable>>,
    nodes: Vec<QueryNode>,
    checkpoint: Checkpoint,
    /// Largest event time seen per source with a watermark, up to the last committed epoch.
    max_event_ms: BTreeMap<String, i64>,
    /// The watermark of the next epoch; `None` until every watermarked source has data.
    watermark_ms: Option<i64>,
    /// When this run started (idle timeouts of partitions not yet seen count from here).
    started: Instant,
    /// The checkpoint's run lock, held while the pipeline runs (taken by `run` if the caller
    /// did not take it before assembling the pipeline).
    run_lock: Option<RunLock>,
    /// The epoch being planned, read or committed (for the failure record).
    epoch_in_progress: Option<u64>,
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
        let mut dead_letters = BTreeMap::new();
        let mut dead_letter_streams = BTreeMap::new();
        let sources = sources
            .into_iter()
            .map(|s| {
                dead_letters.insert(s.name.clone(), Some(s.dead_letter));
                dead_letter_streams.insert(s.name.clone(), s.dead_letter_stream);
                RunningSource {
                    name: s.name,
                    source: s.source,
                    decoder: s.decoder,
                    table: s.table,
                    event_time: s.event_time,
                    last_data: BTreeMap::new(),
                }
            })
            .collect();
        Pipeline {
            name: name.into(),
            ctx,
            sources,
            dead_letters,
            dead_letter_streams,
            nodes,
            checkpoint,
            max_event_ms: BTreeMap::new(),
            watermark_ms: None,
            started: Instant::now(),
            run_lock: None,
            epoch_in_progress: None,
        }
    }

    /// Holds `lock` (see [`Checkpoint::lock`]) for as long as the pipeline lives.
    pub fn with_run_lock(mut self, lock: RunLock) -> Self {
        self.run_lock = Some(lock);
        self
    }

    /// The watermark from the largest event times seen: per source, the minimum over its
    /// partitions of `max event time - delay` (a source without partitions has one), leaving
    /// out partitions idle for the source's `idle_timeout` while another is active; then the
    /// minimum over watermarked sources, again leaving out idle sources while another is
    /// active. It never moves backwards.
    fn next_watermark(&self, max_event_ms: &BTreeMap<String, i64>) -> Option<i64> {
        // Per watermarked source: (its watermark, whether any partition is active).
        let mut per_source = Vec::new();
        for s in &self.sources {
            let Some(et) = &s.event_time else { continue };
            let prefix = format!("{}/", s.name);
            let partitions: Vec<(&String, i64)> = max_event_ms
                .iter()
                .filter(|(k, _)| **k == s.name || k.starts_with(&prefix))
                .map(|(k, v)| (k, v.saturating_sub(et.delay_ms)))
                .collect();
            if partitions.is_empty() {
                // No event time yet: the source holds the watermark unless it is idle.
                let idle = self.started.elapsed() >= et.idle_timeout;
                per_source.push((None, !idle));
                continue;
            }
            let active: Vec<i64> = partitions
                .iter()
                .filter(|(k, _)| {
                    s.last_data
                        .get(*k)
                        .copied()
                        .unwrap_or(self.started)
                        .elapsed()
                        < et.idle_timeout
                })
                .map(|(_, wm)| *wm)
                .collect();
            let wm = if active.is_empty() {
                partitions.iter().map(|(_, wm)| *wm).min()
            } else {
                active.iter().copied().min()
            };
            per_source.push((wm, !active.is_empty()));
        }
        let any_active = per_source.iter().any(|(_, active)| *active);
        let mut lowest: Option<i64> = None;
        for (wm, active) in per_source {
            if any_active && !active {
                continue;
            }
            let wm = wm?;
            lowest = Some(lowest.map_or(wm, |l| l.min(wm)));
        }
        match (lowest, self.watermark_ms) {
            (Some(new), Some(old)) => Some(new.max(old)),
            (new, old) => new.or(old),
        }
    }

    /// Opens every node's operator and restores its state from the checkpoint of `epoch` (the
    /// last committed one). A node in `stateful` (stateful when that epoch committed) must find
    /// its state file: starting it empty would silently lose its state (open windows). A node
    /// that is new to the pipeline starts empty.
    async fn restore_operators(&mut self, epoch: u64, stateful: &[String]) -> Result<()> {
        for node in &mut self.nodes {
            let Some(operator) = node.operator.as_mut() else {
                continue;
            };
            let layout = operator
                .open(&self.ctx, &node.plan)
                .await
                .map_err(|e| in_node(e, &node.name, epoch))?;
            if let Some(batches) = self.checkpoint.read_state(&node.name, epoch, &layout)? {
                operator.restore(batches)?;
            } else if stateful.contains(&node.name) {
                return Err(EngineError::Checkpoint {
                    path: self.checkpoint.state_file(&node.name, epoch),
                    message: format!(
                        "the state of `{}` ({}) as of epoch {epoch} is missing or unreadable, \
                         so it cannot be restored. Restore the file from a backup, or rebuild: \
                         delete the checkpoint folder and the node's table and run again from \
                         the start of the input",
                        node.name,
                        operator.describe()
                    ),
                    cause: None,
                });
            }
        }
        Ok(())
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs epochs until no source has new data (`once`) or `stop` is set. An error in an
    /// epoch is also recorded in the checkpoint (see [`Checkpoint::last_failure`]).
    pub async fn run(&mut self, options: &RunOptions) -> Result<RunSummary> {
        self.epoch_in_progress = None;
        let result = self.run_epochs(options).await;
        if let (Err(e), Some(epoch)) = (&result, self.epoch_in_progress) {
            let failure = EpochFailure {
                epoch,
                failed_at: now_rfc3339(),
                error: e.to_string(),
                what_to_do: e.what_to_do().to_string(),
            };
            if let Err(not_recorded) = self.checkpoint.write_failure(&failure) {
                tracing::warn!("cannot record the failure for `weir status`: {not_recorded}");
            }
        }
        result
    }

    async fn run_epochs(&mut self, options: &RunOptions) -> Result<RunSummary> {
        if self.run_lock.is_none() {
            self.run_lock = Some(self.checkpoint.lock()?);
        }
        let mut summary = RunSummary::default();
        let history = self.checkpoint.all_offsets()?;
        let last_logged = history.iter().map(|e| e.epoch).max().unwrap_or(0);
        self.check_tables_not_ahead(last_logged)?;
        let latest = self.checkpoint.latest_commit()?;
        let last_commit = latest.as_ref().map(|c| c.epoch).unwrap_or(0);
        if let Some(c) = &latest {
            self.max_event_ms = c.max_event_time_ms.clone();
            self.watermark_ms = c.watermark_ms;
        }
        // The windowed nodes of the last commit wrote state that must be there to restore.
        let stateful: Vec<String> = latest
            .as_ref()
            .map(|c| c.late_rows.keys().cloned().collect())
            .unwrap_or_default();
        self.restore_operators(last_commit, &stateful).await?;
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
        let mut prefetched: Option<Prefetched> = None;
        let mut last_start: Option<Instant> = None;
        if let Some(entry) = pending.into_iter().find(|e| e.epoch == next_epoch) {
            info!(
                epoch = entry.epoch,
                "re-running the epoch that was logged but not committed"
            );
            drained |= entry.drain;
            self.epoch_in_progress = Some(entry.epoch);
            last_start = Some(Instant::now());
            let input = self.ingest(entry.epoch, &entry.sources)?;
            let (report, next) = self
                .run_epoch(&entry, input, true, prefetch_due(options, last_start))
                .await?;
            prefetched = next;
            self.finish_epoch(report, options, &mut summary);
            next_epoch += 1;
        }
        loop {
            if options.stop.load(Ordering::SeqCst) {
                break;
            }
            self.epoch_in_progress = Some(next_epoch);
            let (ranges, input) = match prefetched.take() {
                Some(p) => {
                    last_start = Some(p.planned_at);
                    (p.ranges, Some(p.input))
                }
                None => {
                    // Like Spark's processing-time trigger: epochs start at most once per
                    // interval, so a trickle of data makes one commit per interval, not one per
                    // record; an epoch that overran its interval is followed at once. `--once`
                    // never waits.
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
                    (self.plan_ranges(options.once)?, None)
                }
            };
            let mut drain = false;
            if ranges.is_empty() {
                let open = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.operator.as_ref())
                    .any(|op| op.metrics().state_rows > 0);
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
            // A prefetched input was read before its offsets were logged. That is safe: nothing
            // of this epoch is committed anywhere before the log entry exists, and a crash in
            // between replans the epoch from the last commit.
            self.checkpoint.write_offsets(&entry)?;
            crash_point("offsets-logged", next_epoch);
            let input = match input {
                Some(input) => input,
                None => self.ingest(next_epoch, &entry.sources)?,
            };
            let (report, next) = self
                .run_epoch(&entry, input, false, prefetch_due(options, last_start))
                .await?;
            prefetched = next;
            self.finish_epoch(report, options, &mut summary);
            next_epoch += 1;
        }
        Ok(summary)
    }

    /// Refuses a checkpoint that is behind a table: a table holding epoch N of this pipeline
    /// while the offset log ends before N means the checkpoint was deleted or replaced, and
    /// running on would number new epochs that the table skips as already committed.
    fn check_tables_not_ahead(&self, last_logged: u64) -> Result<()> {
        let sinks = self.nodes.iter().filter_map(|n| n.sink.as_deref());
        let dead_letters = self.dead_letters.values().filter_map(|s| s.as_deref());
        for sink in sinks.chain(dead_letters) {
            let Some(held) = sink.last_committed_epoch() else {
                continue;
            };
            if held > last_logged {
                return Err(EngineError::Checkpoint {
                    path: self.checkpoint.root().to_path_buf(),
                    message: format!(
                        "{} already holds epoch {held} of pipeline `{}`, but this checkpoint \
                         has logged only up to epoch {last_logged}: the checkpoint was deleted, \
                         reset or replaced by an older copy. Running from it would number new \
                         epochs from {}, which the table skips as already committed, losing \
                         their rows. Restore the checkpoint folder; or, to rebuild from the \
                         sources, remove the pipeline's tables (dead letters included) as well, \
                         or run with a new --lake",
                        sink.describe(),
                        self.name,
                        last_logged + 1
                    ),
                    cause: None,
                });
            }
        }
        Ok(())
    }

    /// Asks every source for its next range (sources with nothing new are left out).
    fn plan_ranges(&mut self, available_now: bool) -> Result<BTreeMap<String, serde_json::Value>> {
        plan_ranges(&mut self.sources, available_now)
    }

    /// Reads and decodes `ranges` for `epoch`.
    fn ingest(
        &mut self,
        epoch: u64,
        ranges: &BTreeMap<String, serde_json::Value>,
    ) -> Result<EpochInput> {
        let threads = self.decode_threads();
        ingest(&mut self.sources, threads, epoch, ranges)
    }

    /// Threads that decode an epoch's records.
    fn decode_threads(&self) -> usize {
        self.ctx.copied_config().target_partitions()
    }

    /// While epoch `epoch` commits: plans and reads the next epoch when it is due (when it was
    /// not yet due as the epoch started computing). `None` when not due or nothing is available.
    fn prefetch(&mut self, epoch: u64, plan: &PrefetchPlan) -> Result<Option<Prefetched>> {
        let threads = self.decode_threads();
        prefetch_next(&mut self.sources, threads, epoch, plan)
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
        for (k, v) in &report.rows_new {
            *summary.rows_new.entry(k.clone()).or_default() += v;
        }
        if let Some(cb) = &options.on_epoch {
            cb(&report);
        }
    }

    /// Runs one epoch over `input` (exactly the ranges of `entry`) and commits it. While it is
    /// computed and its tables commit, the next epoch's input is read if `prefetch` says it is
    /// due.
    async fn run_epoch(
        &mut self,
        entry: &OffsetEntry,
        input: EpochInput,
        replayed: bool,
        prefetch: PrefetchPlan,
    ) -> Result<(EpochReport, Option<Prefetched>)> {
        let epoch = entry.epoch;
        let started = input.started;
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
        let prefetched = async {
            // Each sink's rows, and the rows it must delete (sessions replaced in update mode).
            let mut outputs: Vec<(SinkSlot, Vec<RecordBatch>, Vec<RecordBatch>)> = Vec::new();
            // Per source: undecodable records and rows found late by windowed nodes.
            let mut dead_letters: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
            let mut inputs = input.sources;
            for node in &mut self.sources {
                let Some(input) = inputs.remove(&node.name) else {
                    node.table.set(Vec::new());
                    continue;
                };
                report.rows_in.insert(node.name.clone(), input.records_read);
                report
                    .dead_letters
                    .insert(node.name.clone(), input.dead_count);
                if let Some(dead) = input.dead_letters {
                    dead_letters
                        .entry(node.name.clone())
                        .or_default()
                        .push(dead);
                }
                for (partition, max) in input.max_event_ms {
                    let key = match partition {
                        Some(p) => format!("{}/{p}", node.name),
                        None => node.name.clone(),
                    };
                    let entry = max_event_ms.entry(key.clone()).or_insert(max);
                    *entry = (*entry).max(max);
                    node.last_data.insert(key, Instant::now());
                }
                node.table.set(vec![input.rows]);
            }
            // Positions as of this epoch, before the next one is read.
            for node in &self.sources {
                report
                    .positions
                    .insert(node.name.clone(), node.source.describe_position());
            }
            // The next epoch is read and decoded (when due) on a blocking thread while this one
            // is computed and committed. Its error (if any) is reported after this epoch is
            // safely committed.
            let mut sources = std::mem::take(&mut self.sources);
            let (threads, plan) = (self.decode_threads(), prefetch.clone());
            let read_span = tracing::Span::current();
            let early_prefetch = tokio::task::spawn_blocking(move || {
                let _in_epoch = read_span.enter();
                let prefetched = prefetch_next(&mut sources, threads, epoch, &plan);
                (sources, prefetched)
            });
            // Compute every node first (downstream nodes read upstream output of this epoch)...
            let (nodes, ctx) = (&mut self.nodes, &self.ctx);
            let dead_letter_streams = &self.dead_letter_streams;
            let computed = async {
                for (i, node) in nodes.iter_mut().enumerate() {
                    // The dead letters so far (decoding, and late rows of nodes run before).
                    for (source, stream) in dead_letter_streams {
                        stream.set(dead_letters.get(source).cloned().unwrap_or_default());
                    }
                    let (batches, replaced) = match node.operator.as_mut() {
                        Some(operator) => {
                            let step = EpochStep {
                                ctx,
                                plan: &node.plan,
                                node: &node.name,
                                epoch,
                                watermark_ms: watermark,
                            };
                            let OperatorOutput {
                                rows,
                                replaced,
                                late,
                            } = operator
                                .process_epoch(step)
                                .await
                                .map_err(|e| in_node(e, &node.name, epoch))?;
                            if let (Some(source), false) =
                                (&late.dead_letter_to, late.rows.is_empty())
                            {
                                let described = LateRowsOf {
                                    node: &node.name,
                                    reason: late.reason,
                                    watermark_ms: watermark,
                                    time_column: &late.time_column,
                                };
                                let dead = late_rows_batch(source, epoch, &described, &late.rows)?;
                                dead_letters.entry(source.clone()).or_default().push(dead);
                            }
                            report.late_rows.insert(node.name.clone(), late.count);
                            report
                                .open_windows
                                .insert(node.name.clone(), operator.metrics().state_rows);
                            (rows, replaced)
                        }
                        None => {
                            let (rows, failed) = execute_node(ctx, node, epoch).await?;
                            if let Some(failed) = failed {
                                report
                                    .dead_letters
                                    .entry(failed.0.clone())
                                    .and_modify(|n| *n += failed.1.num_rows() as u64)
                                    .or_insert(failed.1.num_rows() as u64);
                                dead_letters.entry(failed.0).or_default().push(failed.1);
                            }
                            (rows, Vec::new())
                        }
                    };
                    node.table.set(batches.clone());
                    if node.sink.is_some() {
                        outputs.push((SinkSlot::Table(i), batches, replaced));
                    }
                }
                Ok::<_, EngineError>(())
            }
            .await;
            if let Err(e) = computed {
                // Give the sources back before failing.
                let (sources, _) = early_prefetch
                    .await
                    .map_err(|e| read_task_failed(epoch, e))?;
                self.sources = sources;
                return Err(e);
            }
            for (source, batches) in dead_letters {
                outputs.push((SinkSlot::DeadLetter(source), batches, Vec::new()));
            }
            // ...then commit the tables and dead letters, and write the window state,
            // concurrently: they are independent, each commit is idempotent, a state file is
            // named by its epoch (a restart reads the one of the last commit), and the commit
            // log is written only after all of them succeeded.
            let states: Vec<_> = self
                .nodes
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.operator.as_ref()?.snapshot())))
                .collect();
            let checkpoint = self.checkpoint.clone();
            let state_written = tokio::task::spawn_blocking(move || {
                for (name, snapshot) in &states {
                    checkpoint.write_state(name, epoch, snapshot)?;
                }
                Ok::<_, EngineError>(())
            });
            let mut commits = Vec::new();
            for (slot, batches, replaced) in outputs {
                let Some(mut sink) = self.take_sink(&slot) else {
                    continue;
                };
                let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                commits.push(tokio::spawn(async move {
                    let result = sink.write_epoch_replacing(epoch, batches, replaced).await;
                    (slot, rows, sink, result)
                }));
            }
            let (sources, early) = early_prefetch
                .await
                .map_err(|e| read_task_failed(epoch, e))?;
            self.sources = sources;
            // Not yet due when this epoch started computing: try again while it commits.
            let prefetched = match early {
                Ok(None) => self.prefetch(epoch, &prefetch),
                other => other,
            };
            let mut first_error = None;
            for commit in commits {
                let (slot, rows, sink, result) = commit.await.map_err(|e| EngineError::Sink {
                    sink: "a table of this pipeline".to_string(),
                    epoch,
                    cause: Box::new(e),
                })?;
                match result {
                    Ok(written) => {
                        crash_point("sink-committed", epoch);
                        if let SinkSlot::Table(i) = slot {
                            let name = self.nodes[i].name.clone();
                            if written.already_committed {
                                report.already_committed.push(name.clone());
                            }
                            if let Some(new) = written.rows_inserted {
                                report.rows_new.insert(name.clone(), new);
                            }
                            report.rows_out.insert(name, rows);
                        }
                    }
                    Err(cause) => {
                        first_error.get_or_insert(EngineError::Sink {
                            sink: sink.describe(),
                            epoch,
                            cause,
                        });
                    }
                }
                self.put_sink(slot, sink);
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            crash_point("sinks-committed", epoch);
            state_written.await.map_err(|e| {
                EngineError::checkpoint(
                    self.checkpoint.root(),
                    format!("the operator state of epoch {epoch} was not written"),
                    e,
                )
            })??;
            crash_point("state-written", epoch);
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
            crash_point("commit-written", epoch);
            self.max_event_ms = max_event_ms;
            self.watermark_ms = next_watermark;
            for node in &mut self.sources {
                if let Some(range) = entry.sources.get(&node.name) {
                    node.source.committed(range)?;
                }
            }
            prefetched
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
        Ok((report, prefetched))
    }

    /// Takes a sink out for a commit task.
    fn take_sink(&mut self, slot: &SinkSlot) -> Option<Box<dyn Sink>> {
        match slot {
            SinkSlot::Table(i) => self.nodes[*i].sink.take(),
            SinkSlot::DeadLetter(name) => self.dead_letters.get_mut(name)?.take(),
        }
    }

    /// Puts a sink back after its commit task.
    fn put_sink(&mut self, slot: SinkSlot, sink: Box<dyn Sink>) {
        match slot {
            SinkSlot::Table(i) => self.nodes[i].sink = Some(sink),
            SinkSlot::DeadLetter(name) => {
                self.dead_letters.insert(name, Some(sink));
            }
        }
    }
}

/// An operator's error, with the node and epoch it happened in when it came from DataFusion.
fn in_node(error: EngineError, node: &str, epoch: u64) -> EngineError {
    match error {
        EngineError::DataFusion(cause) => EngineError::Plan {
            node: node.to_string(),
            epoch,
            cause,
        },
        other => other,
    }
}

/// The thread reading the epoch after `epoch` did not finish (it panicked).
fn read_task_failed(epoch: u64, e: tokio::task::JoinError) -> EngineError {
    EngineError::Source {
        source_name: "(every source)".to_string(),
        message: format!("reading epoch {} failed: {e}", epoch + 1),
        cause: None,
    }
}

/// Asks every source for its next range (sources with nothing new are left out).
fn plan_ranges(
    sources: &mut [RunningSource],
    available_now: bool,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut ranges = BTreeMap::new();
    for node in sources {
        if let Some(range) = node.source.plan_next(available_now)? {
            ranges.insert(node.name.clone(), range);
        }
    }
    Ok(ranges)
}

/// Reads and decodes `ranges` for `epoch`, with up to `threads` decoding threads.
fn ingest(
    sources: &mut [RunningSource],
    threads: usize,
    epoch: u64,
    ranges: &BTreeMap<String, serde_json::Value>,
) -> Result<EpochInput> {
    let started = Instant::now();
    let mut inputs = BTreeMap::new();
    for node in sources {
        let Some(range) = ranges.get(&node.name) else {
            continue;
        };
        let mut reader = SourceReader {
            name: &node.name,
            source: node.source.as_mut(),
            decoder: &node.decoder,
            schema: node.table.schema_ref(),
            event_time_column: node.event_time.as_ref().map(|e| e.column.as_str()),
            max_ahead_ms: node
                .event_time
                .as_ref()
                .and_then(|e| e.max_ahead)
                .map(|d| d.as_millis() as i64),
        };
        let input = reader.ingest(epoch, range, threads)?;
        inputs.insert(node.name.clone(), input);
    }
    Ok(EpochInput {
        epoch,
        started,
        sources: inputs,
    })
}

/// Plans and reads the epoch after `epoch` if `plan` says it is due. `None` when not due or
/// nothing is available.
fn prefetch_next(
    sources: &mut [RunningSource],
    threads: usize,
    epoch: u64,
    plan: &PrefetchPlan,
) -> Result<Option<Prefetched>> {
    match plan.due {
        Some(due) if Instant::now() >= due && !plan.stop.load(Ordering::SeqCst) => {}
        _ => return Ok(None),
    }
    let planned_at = Instant::now();
    let ranges = plan_ranges(sources, plan.available_now)?;
    if ranges.is_empty() {
        return Ok(None);
    }
    let input = ingest(sources, threads, epoch + 1, &ranges)?;
    Ok(Some(Prefetched {
        ranges,
        planned_at,
        input,
    }))
}

/// When (and whether) the next epoch may be read while the current one commits.
#[derive(Clone)]
struct PrefetchPlan {
    /// The earliest time the next epoch may start; `None` = do not prefetch.
    due: Option<Instant>,
    /// Plan with `available_now` (the `--once` mode).
    available_now: bool,
    stop: Arc<AtomicBool>,
}

/// With `--once` the next epoch is always due; otherwise it is due one trigger interval after
/// the current epoch started, as the trigger would start it.
fn prefetch_due(options: &RunOptions, last_start: Option<Instant>) -> PrefetchPlan {
    let due = if options.once {
        Some(Instant::now())
    } else {
        last_start.map(|s| s + options.trigger_interval)
    };
    PrefetchPlan {
        due,
        available_now: options.once,
        stop: options.stop.clone(),
    }
}

/// Runs one node's plan over the current epoch's streams. Rows the query fails on are
/// isolated where the node allows it (see `row_errors`): then the output of the other rows
/// comes back with the dead letters of the failing ones (and the source they belong to).
async fn execute_node(
    ctx: &SessionContext,
    node: &QueryNode,
    epoch: u64,
) -> Result<(Vec<RecordBatch>, Option<(String, RecordBatch)>)> {
    let plan_error = EngineError::plan(&node.name, epoch);
    let physical = ctx
        .state()
        .create_physical_plan(&node.plan)
        .await
        .map_err(plan_error)?;
    let error = match collect(physical, ctx.task_ctx()).await {
        Ok(rows) => return Ok((rows, None)),
        Err(e) => e,
    };
    let Some(input) = node.row_input.as_ref().filter(|_| is_row_error(&error)) else {
        return Err(plan_error(error));
    };
    let (rows, failed) = run_isolating_bad_rows(ctx, &node.plan, input, error)
        .await
        .map_err(plan_error)?;
    let dead = crate::dead_letter::failed_rows_batch(
        &input.source,
        epoch,
        &node.name,
        &input.name,
        &failed,
    )?;
    Ok((rows, Some((input.source.clone(), dead))))
}

/// Whether the last committed epoch was a drain (then a restart must not drain again).
fn pending_drained(latest: &Option<CommitEntry>) -> bool {
    latest
        .as_ref()
        .is_some_and(|c| c.watermark_ms == Some(i64::MAX))
}

async fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let deadline = Instant::now() + total;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(step.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
