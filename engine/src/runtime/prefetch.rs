//! Planning and reading epochs off the async runtime. Sources are synchronous (they read
//! files, poll Kafka, sleep), so every plan and read runs on a blocking thread with the
//! sources moved there and back; the async workers never wait on a source. While epoch N is
//! computed and committed, epoch N+1 is planned and read ahead when it is due.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::ingest::{EpochInput, SourceReader};
use super::nodes::RunningSource;
use super::options::RunOptions;
use super::pipeline::Pipeline;
use crate::error::{EngineError, Result};

/// Each source's range for one epoch, by source name.
pub(super) type Ranges = BTreeMap<String, serde_json::Value>;

/// The next epoch's input, read while the previous epoch was computed and committed.
pub(super) struct Prefetched {
    pub(super) ranges: Ranges,
    pub(super) planned_at: Instant,
    pub(super) input: EpochInput,
}

/// When (and whether) the next epoch may be read while the current one commits.
#[derive(Clone)]
pub(super) struct PrefetchPlan {
    /// The earliest time the next epoch may start; `None` = do not prefetch.
    due: Option<Instant>,
    /// Plan with `available_now` (the `--once` mode).
    available_now: bool,
    stop: Arc<AtomicBool>,
}

/// The sources, away on a blocking thread reading the next epoch (or not, when not due).
pub(super) type ReadingAhead = JoinHandle<(Vec<RunningSource>, Result<Option<Prefetched>>)>;

/// With `--once` the next epoch is always due; otherwise it is due one trigger interval after
/// the current epoch started, as the trigger would start it.
pub(super) fn prefetch_due(options: &RunOptions, last_start: Option<Instant>) -> PrefetchPlan {
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

impl Pipeline {
    /// Asks every source for its next range (sources with nothing new are left out).
    pub(super) async fn plan_ranges(&mut self, available_now: bool) -> Result<Ranges> {
        self.with_sources(move |sources, _| plan_ranges(sources, available_now))
            .await
    }

    /// Reads and decodes `ranges` for `epoch`.
    pub(super) async fn ingest(&mut self, epoch: u64, ranges: &Ranges) -> Result<EpochInput> {
        let ranges = ranges.clone();
        self.with_sources(move |sources, threads| ingest(sources, threads, epoch, &ranges))
            .await
    }

    /// Threads that decode an epoch's records.
    fn decode_threads(&self) -> usize {
        self.ctx.copied_config().target_partitions()
    }

    /// Runs `work` over the sources on a blocking thread and puts them back.
    async fn with_sources<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut [RunningSource], usize) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut sources = std::mem::take(&mut self.sources);
        let threads = self.decode_threads();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _in_span = span.enter();
            let result = work(&mut sources, threads);
            (sources, result)
        });
        let (sources, result) = task.await.map_err(|e| source_task_failed("reading", e))?;
        self.sources = sources;
        result
    }

    /// Moves the sources to a blocking thread that reads the epoch after `epoch` if it is due
    /// by `plan`; [`Self::finish_prefetch`] or [`Self::join_prefetch`] brings them back.
    pub(super) fn spawn_prefetch(&mut self, epoch: u64, plan: &PrefetchPlan) -> ReadingAhead {
        let mut sources = std::mem::take(&mut self.sources);
        let (threads, plan) = (self.decode_threads(), plan.clone());
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _in_epoch = span.enter();
            let prefetched = prefetch_next(&mut sources, threads, epoch, &plan);
            (sources, prefetched)
        })
    }

    /// Takes the sources back from a read ahead; when the next epoch was not yet due as this
    /// one started, tries again now (while this epoch commits). The inner result is the
    /// read's own outcome, reported after this epoch has committed.
    pub(super) async fn finish_prefetch(
        &mut self,
        reading: ReadingAhead,
        epoch: u64,
        plan: &PrefetchPlan,
    ) -> Result<Result<Option<Prefetched>>> {
        let early = self.join_prefetch(reading, epoch).await?;
        Ok(match early {
            Ok(None) => {
                let plan = plan.clone();
                self.with_sources(move |sources, threads| {
                    prefetch_next(sources, threads, epoch, &plan)
                })
                .await
            }
            other => other,
        })
    }

    /// Takes the sources back from a read ahead, returning what it read.
    pub(super) async fn join_prefetch(
        &mut self,
        reading: ReadingAhead,
        epoch: u64,
    ) -> Result<Result<Option<Prefetched>>> {
        let (sources, read) = reading
            .await
            .map_err(|e| source_task_failed(&format!("reading epoch {}", epoch + 1), e))?;
        self.sources = sources;
        Ok(read)
    }
}

/// A source thread that did not finish (it panicked).
fn source_task_failed(what: &str, e: tokio::task::JoinError) -> EngineError {
    EngineError::Source {
        source_name: "(every source)".to_string(),
        message: format!("{what} failed: {e}"),
        cause: None,
    }
}

/// Asks every source for its next range (sources with nothing new are left out).
fn plan_ranges(sources: &mut [RunningSource], available_now: bool) -> Result<Ranges> {
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
    ranges: &Ranges,
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
