//! Real Delta readers open Weir's tables: the Python `deltalake` package (with pyarrow), Polars
//! and DuckDB each read every table of the example lake and must count what DataFusion counts,
//! including a filter on silver's partition column that prunes files; dbt (dbt-duckdb) builds
//! models over the tables whose numbers must match DataFusion's.
//!
//! Needs the venv made by `scripts/python-env.sh` (or `WEIR_PYTHON`). Without it the test skips
//! on a developer's machine and fails under CI=true, so CI cannot pass without running it.

use std::path::PathBuf;
use std::process::Command;

use weir_tests::{example, lake_context, repo_root, run_pipeline, scalar, TestError};

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("WEIR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    candidate.exists().then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_readers_see_the_same_tables() -> Result<(), TestError> {
    let Some(python) = python() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "interop test skipped in CI: run scripts/python-env.sh first (or set WEIR_PYTHON)"
        );
        eprintln!(
            "SKIPPED: no Python venv with deltalake/duckdb/polars; run scripts/python-env.sh"
        );
        return Ok(());
    };
    let lake = tempfile::tempdir()?;
    // 12 epochs, so each table has more than 10 commits and a Delta log checkpoint.
    let run = run_pipeline(
        &example("ecommerce"),
        lake.path(),
        &[("EVENTS", "24000"), ("EVENTS_PER_TRIGGER", "2000")],
    )
    .await?;
    assert_eq!(run.epochs.len(), 12);
    assert!(
        lake.path()
            .join("bronze/events/_delta_log/_last_checkpoint")
            .exists(),
        "no Delta log checkpoint"
    );

    let tables = [
        ("bronze.events", "bronze/events"),
        ("silver.events", "silver/events"),
        ("fraud.scores", "fraud/scores"),
        ("_dead_letter.events", "_dead_letter/events"),
    ];
    let ctx = lake_context(lake.path()).await?;
    let date = "2024-03-01";
    let expected_partition = scalar(
        &ctx,
        &format!("SELECT count(*) FROM silver.events WHERE event_date = DATE '{date}'"),
    )
    .await?;
    assert!(expected_partition > 0);

    let tables_json = serde_json::to_string(
        &tables
            .iter()
            .copied()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )?;
    let output = Command::new(&python)
        .arg(repo_root().join("tests/interop/read_lake.py"))
        .arg(lake.path())
        .arg(&tables_json)
        .arg(date)
        .output()?;
    assert!(
        output.status.success(),
        "read_lake.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;

    for (name, _) in tables {
        let expected = scalar(&ctx, &format!("SELECT count(*) FROM {name}")).await?;
        let seen = &report["tables"][name];
        for reader in ["deltalake", "polars", "duckdb_parquet", "duckdb_arrow"] {
            assert_eq!(
                seen[reader].as_i64(),
                Some(expected),
                "{reader} reading {name}: {seen}"
            );
        }
    }
    assert_eq!(
        report["tables"]["bronze.events"]["timestamp_types"],
        serde_json::json!(["timestamp[us, tz=UTC]"])
    );
    let part = &report["silver_partition"];
    for reader in ["deltalake", "polars", "duckdb"] {
        assert_eq!(
            part[reader].as_i64(),
            Some(expected_partition),
            "{reader} on event_date = {date}: {part}"
        );
    }
    let (pruned, total) = (
        part["files_pruned"].as_i64().unwrap_or(0),
        part["files_total"].as_i64().unwrap_or(0),
    );
    assert!(
        pruned > 0 && pruned < total,
        "partition filter did not prune files: {part}"
    );
    Ok(())
}
