//! A reference table that changes while a pipeline crashes and restarts: an epoch that was
//! logged but not committed is replayed joining the version it logged, not the newer file;
//! the epoch after it joins the newer file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_success, query, weir};

fn run(dir: &Path) -> Command {
    let mut cmd = weir();
    cmd.args(["run"])
        .arg(dir.join("p.sql"))
        .args(["--once", "--progress", "quiet", "--lake"])
        .arg(dir.join("lake"));
    cmd
}

fn write_users(dir: &Path, segment: &str) {
    std::fs::write(
        dir.join("users.csv"),
        format!("user_id,segment\nann,{segment}\n"),
    )
    .unwrap();
}

fn write_event(dir: &Path, seq: u64) {
    std::fs::write(
        dir.join(format!("events/{seq}.json")),
        format!("{{\"seq\": {seq}, \"user_id\": \"ann\"}}\n"),
    )
    .unwrap();
}

#[test]
fn a_replayed_epoch_joins_the_reference_version_it_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("events")).unwrap();
    std::fs::write(
        d.join("p.sql"),
        format!(
            "CREATE SOURCE events (seq BIGINT, user_id TEXT)
             WITH (connector = 'files', path = '{0}/events', max_files_per_trigger = 1,
                   settle_time = '0s');
             CREATE REFERENCE TABLE users (user_id TEXT, segment TEXT)
             WITH (connector = 'csv', path = '{0}/users.csv');
             CREATE TABLE enriched AS
             SELECT e.seq, u.segment FROM events e JOIN users u ON e.user_id = u.user_id;",
            d.display()
        ),
    )
    .unwrap();
    write_users(d, "first");
    write_event(d, 1);
    assert_success(&run(d).output().unwrap(), "the first run");

    // Epoch 2 logs the second version, then the process dies before committing it.
    write_users(d, "second");
    write_event(d, 2);
    let crashed = run(d)
        .env("WEIR_CRASH_AT", "offsets-logged@2")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run was to abort");

    // The file changes again before the restart: the replay still joins `second`.
    write_users(d, "third-version");
    write_event(d, 3);
    assert_success(&run(d).output().unwrap(), "the restart");

    let rows = query(
        &d.join("lake"),
        "SELECT seq, segment FROM enriched ORDER BY seq",
    );
    let lines: Vec<String> = rows
        .lines()
        .filter(|l| l.contains("first") || l.contains("second") || l.contains("third"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        vec!["| 1 | first |", "| 2 | second |", "| 3 | third-version |"],
        "{rows}"
    );
    // Only the version in use stays saved in the checkpoint.
    let saved: Vec<String> = std::fs::read_dir(d.join("lake/_checkpoints/p/references/users"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
}
