//! How a run behaves (`RunOptions`) and what it did (`RunSummary`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::progress::EpochReport;

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
    /// Stop after this many epochs of this run (a replayed one included), leaving the rest of
    /// the input for the next run: a backfill in steps, or a run stopped at a known epoch.
    pub max_epochs: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            once: true,
            trigger_interval: Duration::from_secs(1),
            stop: Arc::new(AtomicBool::new(false)),
            on_epoch: None,
            drain: false,
            max_epochs: None,
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
            .field("max_epochs", &self.max_epochs)
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
