//! What one epoch did, printed as a progress line for people or a JSON record for machines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::operators::OperatorMetrics;
use crate::source::PartitionLag;

/// The outcome of one epoch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EpochReport {
    /// The epoch number.
    pub epoch: u64,
    /// True when this epoch was re-run from the offset log after a restart.
    pub replayed: bool,
    /// Records read per source.
    pub rows_in: BTreeMap<String, u64>,
    /// Records dead-lettered per source.
    pub dead_letters: BTreeMap<String, u64>,
    /// Rows produced per table (written, or already committed on replay).
    pub rows_out: BTreeMap<String, u64>,
    /// For tables that MERGE (update output mode): how many of their `rows_out` were new rows
    /// of the table; the rest replaced rows with the same window and keys.
    pub rows_new: BTreeMap<String, u64>,
    /// Tables that skipped this epoch because they had already committed it.
    pub already_committed: Vec<String>,
    /// Wall time of the epoch.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Position of each source after the epoch.
    pub positions: BTreeMap<String, String>,
    /// The watermark this epoch used (epoch milliseconds), if any.
    pub watermark_ms: Option<i64>,
    /// Rows that arrived after their window closed, per windowed node.
    pub late_rows: BTreeMap<String, u64>,
    /// Open (window, keys) groups held after the epoch, per windowed node.
    pub open_windows: BTreeMap<String, u64>,
    /// Each stateful node's operator after the epoch: rows in and out, late rows, state rows
    /// and bytes.
    pub operators: BTreeMap<String, OperatorMetrics>,
    /// Wall time of each table's commit (milliseconds), dead-letter tables as
    /// `_dead_letter.<source>`; the commits run side by side.
    pub commit_ms: BTreeMap<String, u64>,
    /// The largest event time read so far over every source (epoch milliseconds), if any.
    pub max_event_ms: Option<i64>,
    /// Each Kafka source's backlog per partition, as of the plan of this epoch.
    pub lag: BTreeMap<String, Vec<PartitionLag>>,
    /// When the epoch finished (Unix milliseconds): the watermark's delay behind the wall
    /// clock is measured from here.
    pub finished_at_ms: i64,
}

impl EpochReport {
    /// Records read from all sources.
    pub fn total_in(&self) -> u64 {
        self.rows_in.values().sum()
    }

    /// How far the watermark is behind the wall clock at the end of the epoch, in seconds
    /// (`None` without a watermark, or after a drain).
    pub fn watermark_delay_s(&self) -> Option<f64> {
        let wm = self.watermark_ms.filter(|wm| *wm != i64::MAX)?;
        Some((self.finished_at_ms - wm) as f64 / 1000.0)
    }

    /// How far the watermark is behind the largest event time read, in seconds.
    pub fn watermark_behind_events_s(&self) -> Option<f64> {
        let wm = self.watermark_ms.filter(|wm| *wm != i64::MAX)?;
        Some((self.max_event_ms? - wm) as f64 / 1000.0)
    }

    /// Bytes of state held by every operator after the epoch.
    pub fn state_bytes(&self) -> u64 {
        self.operators.values().map(|m| m.state_bytes).sum()
    }
}

impl EpochReport {
    /// One short line for a terminal: epoch, records and rate, dead letters, watermark, how
    /// far each source is, and the state held and late rows over every operator. The
    /// per-table detail is the `Display` form (`--progress verbose`).
    pub fn status_line(&self) -> String {
        let secs = self.duration.as_secs_f64().max(1e-9);
        let mut line = format!(
            "epoch {:>4}{} | in {:>8} | {:>9.0} ev/s | dead {:>5}",
            self.epoch,
            if self.replayed { " (replay)" } else { "" },
            self.total_in(),
            self.total_in() as f64 / secs,
            self.dead_letters.values().sum::<u64>(),
        );
        if let Some(wm) = self.watermark_ms {
            line.push_str(&format!(" | watermark {}", watermark_text(wm)));
        }
        if !self.open_windows.is_empty() {
            line.push_str(&format!(
                " | state {} rows | late {}",
                self.open_windows.values().sum::<u64>(),
                self.late_rows.values().sum::<u64>()
            ));
        }
        for (source, pos) in &self.positions {
            line.push_str(&format!(" | {source}: {pos}"));
        }
        line
    }
}

/// A watermark as a person reads it.
fn watermark_text(wm: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(wm) {
        Some(t) if wm < i64::MAX => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        _ => "end of input".to_string(),
    }
}

impl fmt::Display for EpochReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64().max(1e-9);
        write!(
            f,
            "epoch {:>4}{} | in {:>8} | dead {:>5} | {:>9.0} ev/s |",
            self.epoch,
            if self.replayed { " (replay)" } else { "" },
            self.total_in(),
            self.dead_letters.values().sum::<u64>(),
            self.total_in() as f64 / secs,
        )?;
        for (table, rows) in &self.rows_out {
            let skipped = if self.already_committed.contains(table) {
                " (already committed)"
            } else {
                ""
            };
            match self.rows_new.get(table) {
                Some(new) => write!(f, " {table} {rows} merged ({new} new){skipped}")?,
                None => write!(f, " {table} +{rows}{skipped}")?,
            }
        }
        if let Some(wm) = self.watermark_ms {
            write!(f, " | watermark {}", watermark_text(wm))?;
        }
        for (node, open) in &self.open_windows {
            let late = self.late_rows.get(node).copied().unwrap_or(0);
            write!(f, " | {node}: {open} open, {late} late")?;
        }
        for (source, pos) in &self.positions {
            write!(f, " | {source}: {pos}")?;
        }
        Ok(())
    }
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}
