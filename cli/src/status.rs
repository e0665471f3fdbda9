//! `weir status`: where a pipeline is, read from its checkpoint (no broker or data needed).

use std::collections::BTreeMap;
use std::path::Path;

use weir_engine::checkpoint::Checkpoint;

use crate::commands::CliError;

/// Prints the last committed epoch, its time, the sources' positions, the watermark, the
/// window state held and the dead-letter and late-row totals.
pub fn status(pipeline: &Path, lake: &Path, checkpoint: Option<&Path>) -> Result<(), CliError> {
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
    println!("pipeline   {name}");
    println!("checkpoint {}", dir.display());
    let Some(last) = commits.last() else {
        println!("no epoch committed yet");
        return Ok(());
    };
    println!(
        "last epoch {} committed at {}",
        last.epoch, last.committed_at
    );
    if let Some(pending) = offsets.iter().find(|o| o.epoch > last.epoch) {
        println!(
            "pending    epoch {} was logged at {} but not committed; the next run replays it",
            pending.epoch, pending.planned_at
        );
    }
    let watermark = match last.watermark_ms {
        Some(i64::MAX) => "end of input (drained)".to_string(),
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| ms.to_string()),
        None => "none yet (a watermarked source has no data)".to_string(),
    };
    println!("watermark  {watermark} (for the next epoch)");
    // The position of each source: its latest committed range (for Kafka, per partition).
    println!("sources:");
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
        println!(
            "  {source}: {} records read, {} dead-lettered; last range (epoch {epoch}): {range}",
            read.get(source).copied().unwrap_or(0),
            dead.get(source).copied().unwrap_or(0),
        );
    }
    let state = checkpoint.state_sizes(last.epoch)?;
    if !state.is_empty() {
        println!("window state:");
        for (node, (bytes, rows)) in &state {
            println!(
                "  {node}: {rows} open groups, {:.1} KiB; {} late rows so far",
                *bytes as f64 / 1024.0,
                late.get(node).copied().unwrap_or(0)
            );
        }
    }
    Ok(())
}
