//! `format = 'parquet'` tables: a folder of plain Parquet files (Hive-partitioned) that equals
//! the Delta table of the same query, through a crash after the files were written but before
//! Weir's commit log (the replay replaces its files: no second copy), with no temporary file
//! left for a reader to see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::Command;

use arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use common::{assert_success, pipeline_on_example_source, query_lines, weir};

fn write_pipeline(dir: &Path) {
    pipeline_on_example_source(
        dir,
        "CREATE TABLE silver.events AS
         SELECT event_id, user_id, amount, CAST(event_time AS DATE) AS event_date FROM events;
         CREATE TABLE files.events WITH (format = 'parquet', path = 'files/events',
                                         partition_by = 'event_date', compression = 'zstd',
                                         max_rows_per_file = 1500) AS
         SELECT event_id, user_id, amount, CAST(event_time AS DATE) AS event_date FROM events;",
    );
}

fn run(dir: &Path) -> Command {
    let mut cmd = weir();
    cmd.arg("run")
        .arg(dir.join("p"))
        .args(["--once", "--progress", "quiet", "--lake"])
        .arg(dir.join("lake"))
        .envs([("EVENTS", "20000"), ("EVENTS_PER_TRIGGER", "4000")]);
    cmd
}

/// count, distinct ids, sum of amounts in cents, days: of the Parquet folder, as a reader of
/// the folder sees it (partition values from the folder names).
fn parquet_summary(folder: &Path) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ctx = SessionContext::new();
        let options = ParquetReadOptions::default()
            .table_partition_cols(vec![("event_date".to_string(), DataType::Utf8)]);
        ctx.register_parquet("f", folder.to_str().unwrap(), options)
            .await
            .unwrap();
        let batches = ctx
            .sql(
                "SELECT concat(count(*), '|', count(DISTINCT event_id), '|', \
                 CAST(round(sum(amount) * 100) AS BIGINT), '|', count(DISTINCT event_date)) \
                 FROM f",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .nth(3)
            .unwrap()
            .trim_matches(|c| c == '|' || c == ' ')
            .to_string()
    })
}

#[test]
fn a_parquet_folder_equals_the_delta_table_after_a_replayed_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(&dir.path().join("p"));
    // Both tables wrote epoch 2, then the process died before the commit log had it.
    let crashed = run(dir.path())
        .env("WEIR_CRASH_AT", "sinks-committed@2")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run was to abort");
    assert_success(&run(dir.path()).output().unwrap(), "the restart");

    let delta_line = query_lines(
        &dir.path().join("lake"),
        "SELECT concat(count(*), '|', count(DISTINCT event_id), '|', \
         CAST(round(sum(amount) * 100) AS BIGINT), '|', count(DISTINCT event_date)) AS line \
         FROM silver.events",
    )
    .remove(0);
    let folder = dir.path().join("lake/files/events");
    assert_eq!(parquet_summary(&folder), delta_line);
    assert!(delta_line.starts_with("19"), "{delta_line}");

    // Hive folders, files of at most 1,500 rows named by epoch, nothing temporary left.
    let days: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        days.iter().all(|d| d.starts_with("event_date=")),
        "{days:?}"
    );
    let files: Vec<_> = days
        .iter()
        .flat_map(|d| std::fs::read_dir(folder.join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.iter().all(|f| f.starts_with("part-0000000")),
        "{files:?}"
    );
    assert!(files.len() >= 14, "{} files for 20,000 rows", files.len());
}

#[test]
fn target_file_size_closes_files_at_about_that_size() {
    let dir = tempfile::tempdir().unwrap();
    pipeline_on_example_source(
        &dir.path().join("p"),
        "CREATE TABLE files.sized WITH (format = 'parquet', path = 'files/sized',
                                        compression = 'none', target_file_size = '100kB') AS
         SELECT event_id, user_id, amount, event_time FROM events;",
    );
    let out = weir()
        .arg("run")
        .arg(dir.path().join("p"))
        .args(["--once", "--progress", "quiet", "--lake"])
        .arg(dir.path().join("lake"))
        .envs([("EVENTS", "40000"), ("EVENTS_PER_TRIGGER", "20000")])
        .output()
        .unwrap();
    assert_success(&out, "weir run");
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir.path().join("lake/files/sized"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    sizes.sort();
    // Two epochs of 20,000 rows (about 1 MB each): several files each, every file but an
    // epoch's last one closed between 100 kB and one size check (4,096 rows) more.
    assert!(sizes.len() >= 8, "{sizes:?}");
    for (i, (name, size)) in sizes.iter().enumerate() {
        let last_of_epoch = sizes
            .get(i + 1)
            .is_none_or(|(next, _)| next[..13] != name[..13]);
        assert!(*size < 400_000, "{name}: {size} bytes; {sizes:?}");
        assert!(
            last_of_epoch || *size >= 100_000,
            "{name}: {size} bytes; {sizes:?}"
        );
    }
}
