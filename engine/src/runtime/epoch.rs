//! One epoch, from decoded input to commit: hand each source's rows to its stream, run every
//! node in DAG order (a stateful node through its operator), then commit (see `commit`).
//! The next epoch's input is read meanwhile (see `prefetch`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use tracing::{info_span, Instrument};

use super::checkpoint::OffsetEntry;
use super::commit::{EpochOutputs, SinkSlot};
use super::epoch_table::EpochTable;
use super::ingest::EpochInput;
use super::nodes::QueryNode;
use super::partition::{EventTimeKey, MaxEventTimes};
use super::pipeline::{in_node, Pipeline};
use super::prefetch::{PrefetchPlan, Prefetched};
use super::progress::EpochReport;
use crate::dead_letter::{failed_rows_batch, late_rows_batch, LateRows as LateRowsOf};
use crate::error::{EngineError, Result};
use crate::operators::row_errors::{is_row_error, run_isolating_bad_rows};
use crate::operators::{EpochStep, OperatorOutput};

/// Dead-letter rows per source name (undecodable records, late rows, rows a query failed on).
pub(super) type DeadLetters = BTreeMap<String, Vec<RecordBatch>>;

impl Pipeline {
    /// Runs one epoch over `input` (exactly the ranges of `entry`) and commits it. While it is
    /// computed and its tables commit, the next epoch's input is read if `prefetch` says it is
    /// due.
    pub(super) async fn run_epoch(
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
        // The watermark of this epoch comes from data up to the previous one (as in Spark), so
        // a replayed epoch sees the same watermark; a drain epoch closes every window.
        let watermark = if entry.drain {
            Some(i64::MAX)
        } else {
            self.watermark_ms
        };
        report.watermark_ms = watermark;
        let prefetched = async {
            let mut max_event_ms = self.max_event_ms.clone();
            let mut dead_letters = self.take_input(input, &mut max_event_ms, &mut report);
            // The next epoch is read and decoded (when due) on a blocking thread while this one
            // is computed and committed. Its error (if any) is reported after this epoch is
            // safely committed.
            let reading = self.spawn_prefetch(epoch, &prefetch);
            let computed =
                compute_nodes(self, epoch, watermark, &mut dead_letters, &mut report).await;
            let outputs = match computed {
                Ok(outputs) => outputs,
                Err(e) => {
                    // Give the sources back before failing.
                    let _abandoned = self.join_prefetch(reading, epoch).await?;
                    return Err(e);
                }
            };
            let outputs = EpochOutputs {
                tables: outputs,
                dead_letters,
            };
            let prefetched = self
                .commit_epoch(
                    entry,
                    outputs,
                    max_event_ms,
                    &mut report,
                    reading,
                    &prefetch,
                )
                .await?;
            Ok::<_, EngineError>(prefetched)
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
        report.max_event_ms = self.max_event_ms.values().copied().max();
        report.finished_at_ms = chrono::Utc::now().timestamp_millis();
        Ok((report, prefetched))
    }

    /// Hands each source's decoded rows to its stream and records what was read: rows,
    /// dead letters, the largest event time per partition. Returns the dead letters so far.
    fn take_input(
        &mut self,
        input: EpochInput,
        max_event_ms: &mut MaxEventTimes,
        report: &mut EpochReport,
    ) -> DeadLetters {
        let mut dead_letters = DeadLetters::new();
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
                let key = EventTimeKey::new(&node.name, partition);
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
            if let Some(backlog) = node.source.backlog() {
                report.lag.insert(node.name.clone(), backlog);
            }
        }
        dead_letters
    }
}

/// Runs every node in DAG order (downstream nodes read the upstream output of this epoch):
/// a stateful node through its operator, a stateless one as a plan over the epoch's rows.
/// Returns each table's rows and the rows it must delete (sessions replaced in update mode).
async fn compute_nodes(
    pipeline: &mut Pipeline,
    epoch: u64,
    watermark: Option<i64>,
    dead_letters: &mut DeadLetters,
    report: &mut EpochReport,
) -> Result<Vec<(SinkSlot, Vec<RecordBatch>, Vec<RecordBatch>)>> {
    let ctx = &pipeline.ctx;
    let mut outputs = Vec::new();
    for (i, node) in pipeline.nodes.iter_mut().enumerate() {
        // The dead letters so far (decoding, and late rows of nodes run before).
        conform_dead_letters(dead_letters, &pipeline.dead_letter_streams)?;
        for (source, stream) in &pipeline.dead_letter_streams {
            stream.set(dead_letters.get(source).cloned().unwrap_or_default());
        }
        let (rows, replaced) = if node.operator.is_some() {
            // Fed by another operator: judge lateness by the previous epoch's watermark, and
            // hold both back by how far the rows read can lag it (Spark's rules).
            let watermarks = match pipeline.fed_by_operator.get(&node.name) {
                Some(&delay) => (
                    held_back(watermark, delay),
                    held_back(pipeline.previous_watermark_ms, delay),
                ),
                None => (watermark, watermark),
            };
            run_operator(ctx, node, epoch, watermarks, dead_letters, report).await?
        } else {
            let (rows, failed) = execute_node(ctx, node, epoch).await?;
            if let Some((source, dead)) = failed {
                *report.dead_letters.entry(source.clone()).or_default() += dead.num_rows() as u64;
                dead_letters.entry(source).or_default().push(dead);
            }
            (rows, Vec::new())
        };
        node.table.set(rows.clone());
        if node.sink.is_some() {
            outputs.push((SinkSlot::Table(i), rows, replaced));
        }
    }
    conform_dead_letters(dead_letters, &pipeline.dead_letter_streams)?;
    Ok(outputs)
}

/// Gives every dead-letter batch its source's dead-letter columns (late rows and rows a query
/// failed on lack the source's metadata columns; those are null).
fn conform_dead_letters(
    dead_letters: &mut DeadLetters,
    streams: &BTreeMap<String, Arc<EpochTable>>,
) -> Result<()> {
    for (source, batches) in dead_letters.iter_mut() {
        let Some(stream) = streams.get(source) else {
            continue;
        };
        let schema = stream.schema();
        *batches = std::mem::take(batches)
            .into_iter()
            .map(|batch| crate::dead_letter::conform_to(batch, &schema))
            .collect::<std::result::Result<_, _>>()?;
    }
    Ok(())
}

/// `watermark` held back by `delay_ms` (a drain's stays the end of time).
fn held_back(watermark: Option<i64>, delay_ms: i64) -> Option<i64> {
    watermark.map(|wm| {
        if wm == i64::MAX {
            wm
        } else {
            wm.saturating_sub(delay_ms)
        }
    })
}

/// Runs a stateful node's operator for the epoch; its late rows become dead letters where
/// the operator says so. Returns the rows it emitted and the rows they replace.
async fn run_operator(
    ctx: &SessionContext,
    node: &mut QueryNode,
    epoch: u64,
    (watermark, late_watermark): (Option<i64>, Option<i64>),
    dead_letters: &mut DeadLetters,
    report: &mut EpochReport,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let Some(operator) = node.operator.as_mut() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let step = EpochStep {
        ctx,
        plan: &node.plan,
        node: &node.name,
        epoch,
        watermark_ms: watermark,
        late_watermark_ms: late_watermark,
    };
    let OperatorOutput {
        rows,
        replaced,
        late,
    } = operator
        .process_epoch(step)
        .await
        .map_err(|e| in_node(e, &node.name, epoch))?;
    if let (Some(source), false) = (&late.dead_letter_to, late.rows.is_empty()) {
        let described = LateRowsOf {
            node: &node.name,
            reason: late.reason,
            watermark_ms: late_watermark,
            time_column: &late.time_column,
        };
        let dead = late_rows_batch(source, epoch, &described, &late.rows)?;
        dead_letters.entry(source.clone()).or_default().push(dead);
    }
    report.late_rows.insert(node.name.clone(), late.count);
    let metrics = operator.metrics();
    report
        .open_windows
        .insert(node.name.clone(), metrics.state_rows);
    report.operators.insert(node.name.clone(), metrics);
    Ok((rows, replaced))
}

/// Runs one stateless node's plan over the current epoch's streams. Rows the query fails on
/// are isolated where the node allows it (see `row_errors`): then the output of the other
/// rows comes back with the dead letters of the failing ones (and the source they belong to).
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
    let dead = failed_rows_batch(&input.source, epoch, &node.name, &input.name, &failed)?;
    Ok((rows, Some((input.source.clone(), dead))))
}
