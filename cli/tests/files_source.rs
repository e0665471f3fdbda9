//! The files source as an operator meets it: files still being written, files changed or
//! deleted after their offsets were logged, and a checkpoint that was reset. Nothing is read
//! partially, nothing is read twice, and nothing new is skipped silently.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{assert_success, query};

const PIPELINE: &str = "\
CREATE SOURCE orders (id BIGINT NOT NULL, amount DOUBLE)
WITH (connector = 'files', path = 'incoming'{extra});
CREATE TABLE raw.orders AS SELECT id, amount, _file FROM orders;
";

/// A folder with `p.sql` (the pipeline with `extra` options) and an empty `incoming/`.
fn pipeline(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incoming")).unwrap();
    write_pipeline(dir.path(), extra);
    dir
}

fn write_pipeline(dir: &Path, extra: &str) {
    std::fs::write(dir.join("p.sql"), PIPELINE.replace("{extra}", extra)).unwrap();
}

fn orders(ids: std::ops::Range<u32>) -> String {
    ids.map(|i| format!("{{\"id\":{i},\"amount\":{i}.5}}\n"))
        .collect()
}

fn run(dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = common::weir();
    cmd.current_dir(dir).args(["run", "p.sql", "--once"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn count(dir: &Path, sql: &str) -> String {
    query(&dir.join("lake"), sql)
}

/// A file written slowly while the pipeline runs is read whole, once it has not changed for
/// the default `settle_time` (one second)
/// (before: 21 of 300 lines, one dead letter).
#[test]
fn a_file_still_being_written_is_read_whole() {
    let dir = pipeline("");
    let path = dir.path().join("incoming/slow.json");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(orders(0..20).as_bytes()).unwrap();
    let writer = std::thread::spawn(move || {
        for i in 20..300 {
            // Half a record, a pause, then the rest: a reader taking the file now would see a
            // broken last line.
            let line = format!("{{\"id\":{i},\"amount\":{i}.5}}\n");
            let (head, tail) = line.split_at(8);
            file.write_all(head.as_bytes()).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            file.write_all(tail.as_bytes()).unwrap();
            file.flush().unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let out = run(dir.path(), &[]);
    writer.join().unwrap();
    assert_success(&out, "run");
    let table = count(
        dir.path(),
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM raw.orders",
    );
    assert!(table.contains("| 300 | 300 |"), "{table}");
    let dead = count(dir.path(), "SELECT count(*) AS n FROM _dead_letter.orders");
    assert!(dead.contains("| 0 |"), "{dead}");
}

/// A file changed after it was read is reported, and its new lines are not read (files are
/// read once); new files still are.
#[test]
fn a_file_changed_after_it_was_read_is_reported_not_read_again() {
    let dir = pipeline(", settle_time = '0s'");
    let incoming = dir.path().join("incoming");
    std::fs::write(incoming.join("a.json"), orders(0..3)).unwrap();
    assert_success(&run(dir.path(), &[]), "first run");
    std::fs::write(incoming.join("a.json"), orders(0..5)).unwrap();
    std::fs::write(incoming.join("b.json"), orders(10..12)).unwrap();
    let out = run(dir.path(), &[]);
    assert_success(&out, "second run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("a.json changed after it was read"), "{log}");
    let table = count(
        dir.path(),
        "SELECT _file, count(*) AS n FROM raw.orders GROUP BY _file ORDER BY _file",
    );
    assert!(table.contains("| a.json | 3 |"), "{table}");
    assert!(table.contains("| b.json | 2 |"), "{table}");
}

/// A file deleted after its epoch's offsets were logged stops the run with what happened and
/// what to do; `missing_files = 'skip'` replays the epoch with its other files.
#[test]
fn a_file_deleted_after_its_offsets_were_logged_has_a_way_forward() {
    let dir = pipeline(", settle_time = '0s'");
    let incoming = dir.path().join("incoming");
    std::fs::write(incoming.join("a.json"), orders(0..3)).unwrap();
    std::fs::write(incoming.join("b.json"), orders(10..12)).unwrap();
    let crashed = run(dir.path(), &[("WEIR_CRASH_AT", "offsets-logged@1")]);
    assert!(!crashed.status.success());
    std::fs::remove_file(incoming.join("a.json")).unwrap();
    let out = run(dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("a.json is gone"), "{err}");
    assert!(err.contains("missing_files = 'skip'"), "{err}");

    write_pipeline(dir.path(), ", settle_time = '0s', missing_files = 'skip'");
    assert_success(&run(dir.path(), &[]), "run skipping the missing file");
    let table = count(
        dir.path(),
        "SELECT _file, count(*) AS n FROM raw.orders GROUP BY _file",
    );
    assert!(table.contains("| b.json | 2 |"), "{table}");
    assert!(!table.contains("a.json"), "{table}");
}

/// A checkpoint deleted while the tables stay is refused: a new epoch 1 would be skipped by
/// every table as already committed, losing the new file's rows.
#[test]
fn a_reset_checkpoint_is_refused_instead_of_skipping_new_data() {
    let dir = pipeline(", settle_time = '0s'");
    let incoming = dir.path().join("incoming");
    std::fs::write(incoming.join("a.json"), orders(0..3)).unwrap();
    assert_success(&run(dir.path(), &[]), "first run");
    std::fs::remove_dir_all(dir.path().join("lake/_checkpoints")).unwrap();
    std::fs::write(incoming.join("b.json"), orders(10..12)).unwrap();
    let out = run(dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("already holds epoch 1"), "{err}");
    assert!(err.contains("Restore the checkpoint folder"), "{err}");
}
