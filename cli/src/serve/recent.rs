//! What a server remembers of each pipeline's recent epochs: its progress lines (for `weir
//! logs` and `weir show`) and one point per epoch (for the charts of the page).

use std::collections::VecDeque;

use serde::Serialize;
use weir_engine::runtime::progress::EpochReport;

/// How many progress lines a pipeline keeps.
const KEPT_LINES: usize = 500;

/// How many chart points a pipeline keeps (at one epoch a second, five minutes).
const KEPT_POINTS: usize = 300;

/// One epoch as the page charts it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EpochPoint {
    /// The epoch number.
    pub epoch: u64,
    /// When it finished (Unix milliseconds).
    pub at_ms: i64,
    /// Records read.
    pub rows_in: u64,
    /// Records arriving per second: records read over the time since the previous epoch
    /// finished (Spark's input rate).
    pub input_rate: f64,
    /// Records processed per second of the epoch's own wall time (Spark's processing rate).
    pub processing_rate: f64,
    /// Wall time of the epoch, in milliseconds.
    pub duration_ms: u64,
    /// How far the watermark is behind the wall clock, in seconds.
    pub watermark_delay_s: Option<f64>,
    /// Rows of state held by every operator.
    pub state_rows: u64,
    /// Bytes of state held by every operator.
    pub state_bytes: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
}

/// The recent epochs of one pipeline.
#[derive(Debug, Default)]
pub struct Recent {
    lines: VecDeque<String>,
    points: VecDeque<EpochPoint>,
}

impl Recent {
    /// Remembers a finished epoch.
    pub fn record(&mut self, report: &EpochReport) {
        let line = format!(
            "{} {}",
            chrono::Utc::now().to_rfc3339(),
            report.status_line()
        );
        push_bounded(&mut self.lines, line, KEPT_LINES);
        let point = self.point(report);
        push_bounded(&mut self.points, point, KEPT_POINTS);
    }

    /// The chart point of `report`, its input rate measured from the previous point.
    fn point(&self, report: &EpochReport) -> EpochPoint {
        let rows_in = report.total_in();
        let duration_s = report.duration.as_secs_f64().max(1e-3);
        let since_previous_s = self
            .points
            .back()
            .map(|p| (report.finished_at_ms - p.at_ms) as f64 / 1000.0)
            .filter(|s| *s > 0.0)
            .unwrap_or(duration_s);
        EpochPoint {
            epoch: report.epoch,
            at_ms: report.finished_at_ms,
            rows_in,
            input_rate: rows_in as f64 / since_previous_s,
            processing_rate: rows_in as f64 / duration_s,
            duration_ms: report.duration.as_millis() as u64,
            watermark_delay_s: report.watermark_delay_s(),
            state_rows: report.operators.values().map(|m| m.state_rows).sum(),
            state_bytes: report.state_bytes(),
            dead_letters: report.dead_letters.values().sum(),
        }
    }

    /// The progress lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// The chart points, oldest first.
    pub fn points(&self) -> Vec<EpochPoint> {
        self.points.iter().cloned().collect()
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize) {
    if queue.len() == max {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(epoch: u64, rows: u64, finished_at_ms: i64, duration_ms: u64) -> EpochReport {
        EpochReport {
            epoch,
            rows_in: [("events".to_string(), rows)].into(),
            finished_at_ms,
            duration: Duration::from_millis(duration_ms),
            watermark_ms: Some(finished_at_ms - 30_000),
            ..EpochReport::default()
        }
    }

    #[test]
    fn input_rate_counts_from_the_previous_epoch_and_processing_rate_from_its_own_time() {
        let mut recent = Recent::default();
        recent.record(&report(1, 500, 10_000, 250));
        recent.record(&report(2, 1_000, 12_000, 500));
        let points = recent.points();
        assert_eq!(points[0].processing_rate, 2_000.0);
        assert_eq!(points[1].input_rate, 500.0);
        assert_eq!(points[1].processing_rate, 2_000.0);
        assert_eq!(points[1].watermark_delay_s, Some(30.0));
        assert_eq!(recent.lines().len(), 2);
    }

    #[test]
    fn keeps_only_the_most_recent_points() {
        let mut recent = Recent::default();
        for epoch in 0..(KEPT_POINTS as u64 + 10) {
            recent.record(&report(epoch, 1, epoch as i64 * 1000, 1));
        }
        let points = recent.points();
        assert_eq!(points.len(), KEPT_POINTS);
        assert_eq!(points[0].epoch, 10);
    }
}
