//! The watermark: how far event time has surely advanced, from the largest event times seen
//! per source and partition, holding back for each source's delay and ignoring idle ones.

use super::partition::{EventTimeKey, MaxEventTimes};
use super::pipeline::Pipeline;

impl Pipeline {
    /// The watermark from the largest event times seen: per source, the minimum over its
    /// partitions of `max event time - delay` (a source without partitions has one), leaving
    /// out partitions idle for the source's `idle_timeout` while another is active; then the
    /// minimum over watermarked sources, again leaving out idle sources while another is
    /// active. It never moves backwards.
    pub(super) fn next_watermark(&self, max_event_ms: &MaxEventTimes) -> Option<i64> {
        // Per watermarked source: (its watermark, whether any partition is active).
        let mut per_source = Vec::new();
        for s in &self.sources {
            let Some(et) = &s.event_time else { continue };
            let partitions: Vec<(&EventTimeKey, i64)> = max_event_ms
                .iter()
                .filter(|(k, _)| k.source == s.name)
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
}
