//! Fault injection for the crash tests. With `WEIR_CRASH_AT=point@epoch` in the environment the
//! process aborts (no destructors, no flushing, like `kill -9`) when it reaches `point` while
//! running `epoch`, so a test can crash Weir at each step of an epoch's commit protocol
//! deterministically, not just at random moments. Without the variable this does nothing.

use std::sync::OnceLock;

/// Where in an epoch a crash can be injected, in the order an epoch reaches them.
pub const CRASH_POINTS: [&str; 5] = [
    // The offset entry is written; nothing of the epoch is read yet.
    "offsets-logged",
    // One sink has committed its Delta version; others may still be writing.
    "sink-committed",
    // Every sink has committed; window state and the commit log are not written yet.
    "sinks-committed",
    // Window state is written; the commit log is not.
    "state-written",
    // The commit log is written; the source (Kafka group offsets) is not told yet.
    "commit-written",
];

/// The `(point, epoch)` asked for in `WEIR_CRASH_AT`, read once.
fn target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var("WEIR_CRASH_AT").ok()?;
            let (point, epoch) = value.split_once('@')?;
            Some((point.to_string(), epoch.parse().ok()?))
        })
        .as_ref()
}

/// Aborts the process if `WEIR_CRASH_AT` names this point and epoch.
pub fn crash_point(point: &str, epoch: u64) {
    debug_assert!(CRASH_POINTS.contains(&point), "unknown crash point {point}");
    if let Some((p, e)) = target() {
        if p == point && *e == epoch {
            eprintln!("weir: WEIR_CRASH_AT={point}@{epoch}: aborting");
            std::process::abort();
        }
    }
}
