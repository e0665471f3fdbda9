//! Exactly-once across hard crashes: `weir run` is killed with SIGKILL at seeded-random moments
//! (while reading, writing Delta files, committing, or writing the checkpoint), restarted each
//! time, and at the end every table equals one uninterrupted run over the same events,
//! including the windowed gold tables, whose open windows live in checkpointed state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ENV: [(&str, &str); 2] = [("EVENTS", "40000"), ("EVENTS_PER_TRIGGER", "1000")];
const TABLES: [&str; 6] = [
    "bronze.events",
    "silver.events",
    "fraud.scores",
    "_dead_letter.events",
    "gold.revenue_per_minute",
    "gold.merchant_15m",
];

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn weir(lake: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args([
        "run",
        "examples/ecommerce",
        "--once",
        "--progress",
        "quiet",
        "--lake",
    ])
    .arg(lake)
    .current_dir(repo())
    .envs(ENV)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// Every table's rows (without the ingest time, which differs by run), sorted.
fn dump(lake: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for table in TABLES {
        let sql = if table == "bronze.events" {
            format!("SELECT * EXCLUDE (ingested_at) FROM {table}")
        } else {
            format!("SELECT * FROM {table}")
        };
        let q = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["query", "--lake"])
            .arg(lake)
            .arg(&sql)
            .output()
            .unwrap();
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        let text = String::from_utf8_lossy(&q.stdout).into_owned();
        let mut rows: Vec<&str> = text.lines().collect();
        rows.sort_unstable();
        out.push(format!(
            "{table}: {} lines\n{}",
            rows.len(),
            rows.join("\n")
        ));
    }
    out
}

#[test]
fn killed_and_restarted_run_equals_uninterrupted_run() {
    let reference = tempfile::tempdir().unwrap();
    assert!(weir(reference.path()).status().unwrap().success());

    let crashed = tempfile::tempdir().unwrap();
    // A small deterministic generator of kill delays (SplitMix64).
    let mut seed = 0x5eed_u64;
    let mut kills = 0;
    for _ in 0..8 {
        seed = weir_engine::generator::splitmix(seed);
        let delay = Duration::from_millis(150 + seed % 900);
        let mut child = weir(crashed.path()).spawn().unwrap();
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
    assert!(
        weir(crashed.path()).status().unwrap().success(),
        "final restart failed"
    );

    let (a, b) = (dump(reference.path()), dump(crashed.path()));
    for table in &a {
        // A pretty-printed table is 4 lines of frame and header plus one per row.
        assert!(
            table.lines().count() > 14,
            "too few rows to prove anything: {}",
            table.lines().next().unwrap_or("")
        );
    }
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x == y,
            "table differs after {kills} crashes: {}",
            x.lines().next().unwrap_or("")
        );
    }
}
