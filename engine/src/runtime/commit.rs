//! Committing an epoch: every table and dead-letter table is written, and every operator's
//! state stored, concurrently (they are independent, each commit is idempotent per epoch, and
//! a state file is named by its epoch, so a restart reads the one of the last commit); only
//! when all of them succeeded is the commit log entry written, which makes the epoch done.

use arrow::array::RecordBatch;
use tokio::task::JoinHandle;

use super::checkpoint::{now_rfc3339, CommitEntry, OffsetEntry, CHECKPOINT_FORMAT_VERSION};
use super::crash_point::crash_point;
use super::epoch::DeadLetters;
use super::partition::MaxEventTimes;
use super::pipeline::Pipeline;
use super::prefetch::{PrefetchPlan, Prefetched, ReadingAhead};
use super::progress::EpochReport;
use crate::error::{BoxError, EngineError, Result};
use crate::sink::{Sink, SinkReport};

/// Which sink a commit task holds, so it can be put back.
#[derive(Debug, Clone)]
pub(super) enum SinkSlot {
    /// The sink of the node at this index.
    Table(usize),
    /// The dead-letter table of this source.
    DeadLetter(String),
}

/// What an epoch writes: each table's rows with the rows it must delete, and the dead letters.
pub(super) struct EpochOutputs {
    pub(super) tables: Vec<(SinkSlot, Vec<RecordBatch>, Vec<RecordBatch>)>,
    pub(super) dead_letters: DeadLetters,
}

/// A sink writing one epoch on its own task: the sink, its slot, the rows, and the result.
type CommitTask = JoinHandle<(
    SinkSlot,
    u64,
    Box<dyn Sink>,
    Result<SinkReport, BoxError>,
    std::time::Duration,
)>;

impl Pipeline {
    /// Commits epoch `entry`: writes the tables, dead letters and operator state, collects the
    /// input read ahead meanwhile, then logs the commit and moves the watermark.
    pub(super) async fn commit_epoch(
        &mut self,
        entry: &OffsetEntry,
        outputs: EpochOutputs,
        max_event_ms: MaxEventTimes,
        report: &mut EpochReport,
        reading: ReadingAhead,
        prefetch: &PrefetchPlan,
    ) -> Result<Option<Prefetched>> {
        let epoch = entry.epoch;
        // The sinks start writing first: taking the operators' snapshots (tens of
        // milliseconds for a large dedupe) then overlaps their Parquet encoding.
        let commits = self.spawn_commits(epoch, outputs);
        let state_written = self.spawn_state_write(epoch);
        let prefetched = self.finish_prefetch(reading, epoch, prefetch).await?;
        self.await_commits(epoch, commits, report).await?;
        crash_point("sinks-committed", epoch);
        state_written.await.map_err(|e| {
            EngineError::checkpoint(
                self.checkpoint.root(),
                format!("the operator state of epoch {epoch} was not written"),
                e,
            )
        })??;
        crash_point("state-written", epoch);
        self.log_commit(entry, max_event_ms, report)?;
        prefetched
    }

    /// Stores every operator's state as of `epoch` on a blocking thread.
    fn spawn_state_write(&self, epoch: u64) -> JoinHandle<Result<()>> {
        let started = std::time::Instant::now();
        let states: Result<Vec<_>> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let operator = n.operator.as_ref()?;
                Some(operator.snapshot().map(|s| (n.name.clone(), s)))
            })
            .collect();
        let snapshot_ms = started.elapsed().as_millis() as u64;
        let checkpoint = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || {
            for (name, snapshot) in &states? {
                let started = std::time::Instant::now();
                checkpoint.write_state(name, epoch, snapshot)?;
                tracing::debug!(
                    node = name.as_str(),
                    epoch,
                    snapshot_ms,
                    write_ms = started.elapsed().as_millis() as u64,
                    "operator state written"
                );
            }
            Ok(())
        })
    }

    /// Starts one task per table and dead-letter table writing its rows of `epoch`.
    fn spawn_commits(&mut self, epoch: u64, outputs: EpochOutputs) -> Vec<CommitTask> {
        let dead_letters = outputs
            .dead_letters
            .into_iter()
            .map(|(source, batches)| (SinkSlot::DeadLetter(source), batches, Vec::new()));
        let mut commits = Vec::new();
        for (slot, batches, replaced) in outputs.tables.into_iter().chain(dead_letters) {
            let Some(mut sink) = self.take_sink(&slot) else {
                continue;
            };
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            commits.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = sink.write_epoch_replacing(epoch, batches, replaced).await;
                (slot, rows, sink, result, started.elapsed())
            }));
        }
        commits
    }

    /// Waits for every commit task, puts each sink back and records what it wrote; the first
    /// failure is the epoch's error (after every sink is back).
    async fn await_commits(
        &mut self,
        epoch: u64,
        commits: Vec<CommitTask>,
        report: &mut EpochReport,
    ) -> Result<()> {
        let mut first_error = None;
        for commit in commits {
            let (slot, rows, sink, result, took) = commit.await.map_err(|e| EngineError::Sink {
                sink: "a table of this pipeline".to_string(),
                epoch,
                cause: Box::new(e),
            })?;
            match result {
                Ok(written) => {
                    crash_point("sink-committed", epoch);
                    let table = match &slot {
                        SinkSlot::Table(i) => self.nodes[*i].name.clone(),
                        SinkSlot::DeadLetter(source) => format!("_dead_letter.{source}"),
                    };
                    report
                        .commit_ms
                        .insert(table.clone(), took.as_millis() as u64);
                    if matches!(slot, SinkSlot::Table(_)) {
                        if written.already_committed {
                            report.already_committed.push(table.clone());
                        }
                        if let Some(new) = written.rows_inserted {
                            report.rows_new.insert(table.clone(), new);
                        }
                        report.rows_out.insert(table, rows);
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
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the commit log entry (the epoch is done), moves the watermark for the next
    /// epoch, and tells the sources their ranges are committed.
    fn log_commit(
        &mut self,
        entry: &OffsetEntry,
        max_event_ms: MaxEventTimes,
        report: &EpochReport,
    ) -> Result<()> {
        let epoch = entry.epoch;
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
            epoch_watermark_ms: report.watermark_ms,
        })?;
        crash_point("commit-written", epoch);
        self.max_event_ms = max_event_ms;
        self.previous_watermark_ms = report.watermark_ms;
        self.watermark_ms = next_watermark;
        for node in &mut self.sources {
            if let Some(range) = entry.sources.get(&node.name) {
                node.source.committed(range)?;
            }
        }
        Ok(())
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
