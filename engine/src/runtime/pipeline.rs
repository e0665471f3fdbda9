//! The micro-batch loop: resume from the checkpoint, then plan ranges, log them, read and
//! decode, run every node in DAG order, commit, log the commit (see `epoch` and `commit`).
//! One `Pipeline` is one set of SQL files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use tracing::info;

use super::checkpoint::{
    now_rfc3339, Checkpoint, CommitEntry, EpochFailure, OffsetEntry, RunLock,
    CHECKPOINT_FORMAT_VERSION,
};
use super::crash_point::crash_point;
use super::epoch_table::EpochTable;
use super::ingest::EpochInput;
use super::nodes::{QueryNode, RunningSource, SourceNode};
use super::options::{RunOptions, RunSummary};
use super::partition::MaxEventTimes;
use super::prefetch::{prefetch_due, Prefetched};
use super::progress::EpochReport;
use super::references::{ReferenceNode, RunningReference};
use crate::error::{EngineError, Result};
use crate::sink::Sink;

/// A runnable pipeline: sources, nodes in dependency order, and its checkpoint.
pub struct Pipeline {
    pub(super) name: String,
    pub(super) ctx: SessionContext,
    pub(super) sources: Vec<RunningSource>,
    /// Dead-letter sink per source name (`None` only while a commit task holds it).
    pub(super) dead_letters: BTreeMap<String, Option<Box<dyn Sink>>>,
    /// The `_dead_letter.<source>` stream per source name.
    pub(super) dead_letter_streams: BTreeMap<String, Arc<EpochTable>>,
    pub(super) nodes: Vec<QueryNode>,
    pub(super) checkpoint: Checkpoint,
    /// Largest event time seen per source with a watermark, up to the last committed epoch.
    pub(super) max_event_ms: MaxEventTimes,
    /// The watermark of the next epoch; `None` until every watermarked source has data.
    pub(super) watermark_ms: Option<i64>,
    /// The watermark the last committed epoch used: operators fed by another operator judge
    /// lateness by it, so the rows an upstream operator releases at the current watermark
    /// are not late downstream (Spark's rule for stateful operators in sequence).
    pub(super) previous_watermark_ms: Option<i64>,
    /// Nodes that read, directly or through views, the output of a node with an operator,
    /// with how far behind the watermark the event times they read can be.
    pub(super) fed_by_operator: BTreeMap<String, i64>,
    /// When this run started (idle timeouts of partitions not yet seen count from here).
    pub(super) started: Instant,
    /// The checkpoint's run lock, held while the pipeline runs (taken by `run` if the caller
    /// did not take it before assembling the pipeline).
    pub(super) run_lock: Option<RunLock>,
    /// The epoch being planned, read or committed (for the failure record).
    pub(super) epoch_in_progress: Option<u64>,
    /// The reference tables queries join, each at the version the current epoch pinned.
    pub(super) references: Vec<RunningReference>,
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
        let fed_by_operator = fed_by_operator(&nodes);
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
            previous_watermark_ms: None,
            fed_by_operator,
            started: Instant::now(),
            run_lock: None,
            epoch_in_progress: None,
            references: Vec::new(),
        }
    }

    /// Gives the pipeline its reference tables (`CREATE REFERENCE TABLE`).
    pub fn with_references(mut self, references: Vec<ReferenceNode>) -> Self {
        self.references = references
            .into_iter()
            .map(|node| RunningReference { node, loaded: None })
            .collect();
        self
    }

    /// Holds `lock` (see [`Checkpoint::lock`]) for as long as the pipeline lives.
    pub fn with_run_lock(mut self, lock: RunLock) -> Self {
        self.run_lock = Some(lock);
        self
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The folder of its checkpoint.
    pub fn checkpoint_root(&self) -> &std::path::Path {
        self.checkpoint.root()
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
        let mut summary = RunSummary::default();
        let (mut cursor, pending) = self.resume().await?;
        if let Some(entry) = pending {
            info!(
                epoch = entry.epoch,
                "re-running the epoch that was logged but not committed"
            );
            cursor.drained |= entry.drain;
            self.epoch_in_progress = Some(entry.epoch);
            cursor.last_start = Some(Instant::now());
            self.use_references(&entry.references).await?;
            let input = self.ingest(entry.epoch, &entry.sources).await?;
            self.run_and_advance(&entry, input, true, options, &mut cursor, &mut summary)
                .await?;
        }
        loop {
            let enough = options.max_epochs.is_some_and(|max| summary.epochs >= max);
            if enough || options.stop.load(Ordering::SeqCst) {
                break;
            }
            self.epoch_in_progress = Some(cursor.next_epoch);
            let (mut entry, input) = match self.next_epoch(options, &mut cursor).await? {
                NextEpoch::Stop => break,
                NextEpoch::Idle => continue,
                NextEpoch::Run(entry, input) => (entry, input),
            };
            // Reference versions are pinned (and new ones saved) before the epoch is logged.
            entry.references = self.pin_references().await?;
            // A prefetched input was read before its offsets were logged. That is safe: nothing
            // of this epoch is committed anywhere before the log entry exists, and a crash in
            // between replans the epoch from the last commit.
            self.checkpoint.write_offsets(&entry)?;
            crash_point("offsets-logged", entry.epoch);
            let input = match input {
                Some(input) => input,
                None => self.ingest(entry.epoch, &entry.sources).await?,
            };
            self.run_and_advance(&entry, input, false, options, &mut cursor, &mut summary)
                .await?;
        }
        Ok(summary)
    }

    /// Runs epoch `entry` over `input`, reports it, and moves the cursor past it (keeping
    /// the next epoch's input if it was read ahead).
    async fn run_and_advance(
        &mut self,
        entry: &OffsetEntry,
        input: EpochInput,
        replayed: bool,
        options: &RunOptions,
        cursor: &mut Cursor,
        summary: &mut RunSummary,
    ) -> Result<()> {
        let prefetch = prefetch_due(options, cursor.last_start);
        let (report, next) = self.run_epoch(entry, input, replayed, prefetch).await?;
        cursor.prefetched = next;
        self.finish_epoch(report, options, summary);
        self.prune_reference_copies();
        cursor.next_epoch += 1;
        Ok(())
    }

    /// Takes the run lock, checks the checkpoint against the tables, restores the watermark,
    /// every operator's state and every source's position as of the last commit. Returns
    /// where the loop starts, and the epoch logged but not committed (to replay), if any.
    async fn resume(&mut self) -> Result<(Cursor, Option<OffsetEntry>)> {
        if self.run_lock.is_none() {
            self.run_lock = Some(self.checkpoint.lock()?);
        }
        let history = self.checkpoint.all_offsets()?;
        let last_logged = history.iter().map(|e| e.epoch).max().unwrap_or(0);
        self.check_tables_not_ahead(last_logged)?;
        let latest = self.checkpoint.latest_commit()?;
        let last_commit = latest.as_ref().map(|c| c.epoch).unwrap_or(0);
        if let Some(c) = &latest {
            self.max_event_ms = c.max_event_time_ms.clone();
            self.watermark_ms = c.watermark_ms;
            self.previous_watermark_ms = c.epoch_watermark_ms;
        }
        // The stateful nodes of the last commit wrote state that must be there to restore.
        let stateful: Vec<String> = latest
            .as_ref()
            .map(|c| c.late_rows.keys().cloned().collect())
            .unwrap_or_default();
        self.restore_operators(last_commit, &stateful).await?;
        let (committed, pending): (Vec<_>, Vec<_>) =
            history.into_iter().partition(|e| e.epoch <= last_commit);
        for node in &mut self.sources {
            let ranges: Vec<_> = committed
                .iter()
                .filter_map(|e| e.sources.get(&node.name).cloned())
                .collect();
            node.source.restore(&ranges)?;
        }
        let cursor = Cursor {
            next_epoch: last_commit + 1,
            prefetched: None,
            last_start: None,
            drained: pending_drained(&latest),
        };
        let replay = pending.into_iter().find(|e| e.epoch == last_commit + 1);
        Ok((cursor, replay))
    }

    /// Plans the next epoch: the input read ahead, or (at most once per trigger interval)
    /// each source's next range. With nothing new, `--once --drain` runs one drain epoch when
    /// state is open; otherwise the run stops (`--once`) or idles.
    async fn next_epoch(&mut self, options: &RunOptions, cursor: &mut Cursor) -> Result<NextEpoch> {
        let (ranges, input) = match cursor.prefetched.take() {
            Some(p) => {
                cursor.last_start = Some(p.planned_at);
                (p.ranges, Some(p.input))
            }
            None => {
                // Like Spark's processing-time trigger: epochs start at most once per
                // interval, so a trickle of data makes one commit per interval, not one per
                // record; an epoch that overran its interval is followed at once. `--once`
                // never waits.
                if let (false, Some(started)) = (options.once, cursor.last_start) {
                    let next = started + options.trigger_interval;
                    sleep_unless_stopped(
                        next.saturating_duration_since(Instant::now()),
                        &options.stop,
                    )
                    .await;
                    if options.stop.load(Ordering::SeqCst) {
                        return Ok(NextEpoch::Stop);
                    }
                }
                cursor.last_start = Some(Instant::now());
                (self.plan_ranges(options.once).await?, None)
            }
        };
        let mut drain = false;
        if ranges.is_empty() {
            let open = self
                .nodes
                .iter()
                .filter_map(|n| n.operator.as_ref())
                .any(|op| op.metrics().state_rows > 0);
            if !(options.once && options.drain && open && !cursor.drained) {
                return Ok(if options.once {
                    NextEpoch::Stop
                } else {
                    NextEpoch::Idle
                });
            }
            drain = true;
            cursor.drained = true;
        }
        let entry = OffsetEntry {
            format_version: CHECKPOINT_FORMAT_VERSION,
            epoch: cursor.next_epoch,
            sources: ranges,
            planned_at: now_rfc3339(),
            drain,
            references: BTreeMap::new(),
        };
        Ok(NextEpoch::Run(entry, input))
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
            if let Some(state) = self.checkpoint.read_state(&node.name, epoch, &layout)? {
                operator.restore(state)?;
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
        super::metrics::record_epoch(&self.name, &report);
        if let Some(cb) = &options.on_epoch {
            cb(&report);
        }
    }
}

/// The nodes that read the output of a node with an operator, directly or through other
/// nodes (`nodes` are in dependency order), each with how far the event times of what it
/// reads can lag the watermark (the sum of the operators' output delays on the way: a join
/// emits pairs up to its time bound behind it).
fn fed_by_operator(nodes: &[QueryNode]) -> BTreeMap<String, i64> {
    let mut stateful_upstream: BTreeMap<String, i64> = BTreeMap::new();
    let mut fed = BTreeMap::new();
    for node in nodes {
        let input_delay = node
            .inputs
            .iter()
            .filter_map(|i| stateful_upstream.get(i))
            .max()
            .copied();
        if let Some(delay) = input_delay {
            fed.insert(node.name.clone(), delay);
        }
        let own_delay = node.operator.as_ref().map(|o| o.output_delay_ms());
        if input_delay.is_some() || own_delay.is_some() {
            let delay = input_delay.unwrap_or(0) + own_delay.unwrap_or(0);
            stateful_upstream.insert(node.name.clone(), delay);
        }
    }
    fed
}

/// Where the loop is between epochs.
struct Cursor {
    next_epoch: u64,
    /// The next epoch's input, read while the last one committed.
    prefetched: Option<Prefetched>,
    /// When the last epoch was planned (the trigger interval counts from there).
    last_start: Option<Instant>,
    /// A drain epoch ran (or the last commit was one): never drain twice.
    drained: bool,
}

/// What the loop does next.
enum NextEpoch {
    /// Stop the run.
    Stop,
    /// Nothing to do now; plan again at the next trigger.
    Idle,
    /// Run this epoch, with its input when it was read ahead.
    Run(OffsetEntry, Option<EpochInput>),
}

/// An operator's error, with the node and epoch it happened in when it came from DataFusion.
pub(super) fn in_node(error: EngineError, node: &str, epoch: u64) -> EngineError {
    match error {
        EngineError::DataFusion(cause) => EngineError::Plan {
            node: node.to_string(),
            epoch,
            cause,
        },
        other => other,
    }
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
