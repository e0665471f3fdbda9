//! Exactly-once across hard crashes: `weir run` is killed with SIGKILL at seeded-random moments
//! (while reading, writing Delta files, committing, or writing the checkpoint), restarted each
//! time, and at the end every table equals one uninterrupted run over the same events,
//! including the windowed gold tables, whose open windows live in checkpointed state, and the
//! tables of its dedupe, stream joins and reference-table lookups.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_same_tables, weir, ECOMMERCE_JOIN_TABLES, ECOMMERCE_TABLES};

const ENV: [(&str, &str); 2] = [("EVENTS", "40000"), ("EVENTS_PER_TRIGGER", "1000")];

fn run(lake: &Path) -> Command {
    let mut cmd = weir();
    cmd.args([
        "run",
        "examples/ecommerce",
        "--once",
        "--progress",
        "quiet",
        "--lake",
    ])
    .arg(lake)
    .envs(ENV)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

#[test]
fn killed_and_restarted_run_equals_uninterrupted_run() {
    let reference = tempfile::tempdir().unwrap();
    assert!(run(reference.path()).status().unwrap().success());

    let crashed = tempfile::tempdir().unwrap();
    // A small deterministic generator of kill delays (SplitMix64).
    let mut seed = 0x5eed_u64;
    let mut kills = 0;
    for _ in 0..8 {
        seed = weir_engine::source::generator::ecommerce::splitmix(seed);
        let delay = Duration::from_millis(150 + seed % 900);
        let mut child = run(crashed.path()).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no chance to finish the epoch
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= 5,
        "only {kills} runs were killed mid-way; lengthen the run"
    );
    let last = run(crashed.path()).stderr(Stdio::piped()).output().unwrap();
    assert!(
        last.status.success(),
        "final restart failed: {}",
        String::from_utf8_lossy(&last.stderr)
    );

    assert_same_tables(reference.path(), crashed.path(), &ECOMMERCE_TABLES, 1);
    assert_same_tables(reference.path(), crashed.path(), &ECOMMERCE_JOIN_TABLES, 1);
}
