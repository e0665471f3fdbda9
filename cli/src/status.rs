//! `weir status`: where a pipeline is, read from its checkpoint; for Kafka sources also the
//! consumer lag per partition, asked from the brokers (shown as unavailable when they are not
//! reachable, since everything else needs no service).

use std::collections::BTreeMap;
use std::path::Path;

use weir_engine::runtime::checkpoint::{Checkpoint, OffsetEntry};

use crate::commands::CliError;

/// Prints the last committed epoch, its time, the sources' positions (and Kafka lag), the
/// watermark, the window state held and the dead-letter and late-row totals.
pub async fn status(
    pipeline: &Path,
    lake: &Path,
    checkpoint: Option<&Path>,
) -> Result<(), CliError> {
    let name = weir_cli::pipeline_name(pipeline);
    let dir = checkpoint
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lake.join("_checkpoints").join(&name));
    if !dir.is_dir() {
        return Err(CliError::Io(std::io::Error::other(format!(
            "no checkpoint at {}: pipeline `{name}` has not run with this --lake / --checkpoint",
            dir.display()
        ))));
    }
    let checkpoint = Checkpoint::open(&dir, &name)?;
    let commits = checkpoint.all_commits()?;
    let offsets = checkpoint.all_offsets()?;
    outln!("pipeline   {name}");
    outln!("checkpoint {}", dir.display());
    if let Some(failure) = checkpoint.last_failure()? {
        outln!(
            "FAILED     epoch {} at {}: {}",
            failure.epoch,
            failure.failed_at,
            failure.error
        );
        outln!("           what to do: {}", failure.what_to_do);
    }
    let Some(last) = commits.last() else {
        outln!("no epoch committed yet");
        return Ok(());
    };
    outln!(
        "last epoch {} committed at {}",
        last.epoch,
        last.committed_at
    );
    if let Some(pending) = offsets.iter().find(|o| o.epoch > last.epoch) {
        outln!(
            "pending    epoch {} was logged at {} but not committed; the next run replays it",
            pending.epoch,
            pending.planned_at
        );
    }
    let watermark = match last.watermark_ms {
        Some(i64::MAX) => "end of input (drained)".to_string(),
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| ms.to_string()),
        None => "none yet (a watermarked source has no data)".to_string(),
    };
    outln!("watermark  {watermark} (for the next epoch)");
    // The position of each source: its latest committed range (for Kafka, per partition).
    outln!("sources:");
    let mut latest: BTreeMap<&String, (u64, &serde_json::Value)> = BTreeMap::new();
    for entry in offsets.iter().filter(|o| o.epoch <= last.epoch) {
        for (source, range) in &entry.sources {
            latest.insert(source, (entry.epoch, range));
        }
    }
    let mut read: BTreeMap<&String, u64> = BTreeMap::new();
    let mut dead: BTreeMap<&String, u64> = BTreeMap::new();
    let mut late: BTreeMap<&String, u64> = BTreeMap::new();
    for c in &commits {
        for (k, v) in &c.rows_in {
            *read.entry(k).or_default() += v;
        }
        for (k, v) in &c.dead_letters {
            *dead.entry(k).or_default() += v;
        }
        for (k, v) in &c.late_rows {
            *late.entry(k).or_default() += v;
        }
    }
    for (source, (epoch, range)) in &latest {
        outln!(
            "  {source}: {} records read, {} dead-lettered; last range (epoch {epoch}): {range}",
            read.get(source).copied().unwrap_or(0),
            dead.get(source).copied().unwrap_or(0),
        );
    }
    print_lag(pipeline, &offsets, last.epoch).await;
    let state = checkpoint.state_sizes(last.epoch)?;
    if !state.is_empty() {
        outln!("operator state (windows, dedupes, joins):");
        for (node, (bytes, rows)) in &state {
            outln!(
                "  {node}: {rows} rows held, {:.1} KiB; {} late rows so far",
                *bytes as f64 / 1024.0,
                late.get(node).copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}

/// Prints each Kafka partition's committed offset, end offset and lag. Problems (a pipeline
/// that no longer plans, brokers that do not answer) are printed in place of the lag: the rest
/// of the status does not depend on them.
async fn print_lag(pipeline: &Path, offsets: &[OffsetEntry], last_epoch: u64) {
    let planned = match weir_sql::load_pipeline_files(pipeline) {
        Ok(files) => {
            let connectors = weir_cli::connectors();
            weir_sql::plan_pipeline(&weir_cli::pipeline_name(pipeline), &files, 1, &connectors)
                .await
        }
        Err(e) => Err(e),
    };
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            outln!("lag: unavailable, the pipeline does not plan:\n{e}");
            return;
        }
    };
    for mut source in planned.sources {
        let history: Vec<serde_json::Value> = offsets
            .iter()
            .filter(|o| o.epoch <= last_epoch)
            .filter_map(|o| o.sources.get(&source.name).cloned())
            .collect();
        match source.source.lag(&history) {
            Ok(None) => {}
            Ok(Some(partitions)) => {
                let total: i64 = partitions.iter().map(|p| p.lag()).sum();
                outln!("lag of {} (from the brokers): {total} records", source.name);
                for p in partitions {
                    outln!(
                        "  {}/{}: committed up to {}, end {}, lag {}",
                        p.topic,
                        p.partition,
                        p.next,
                        p.end,
                        p.lag()
                    );
                }
            }
            Err(e) => outln!("lag of {}: unavailable: {e}", source.name),
        }
    }
}
