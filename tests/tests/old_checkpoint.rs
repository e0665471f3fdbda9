//! Lakes and checkpoints written by earlier builds restore in this build: continuing one with
//! a third file and a drain gives the same tables as this build running all three files from
//! scratch. `tests/fixtures/landed_checkpoint`: before the operator model, two epochs with open
//! windows and sessions in state. `tests/fixtures/dedupe_format_1`: dedupe state format 1.

use std::path::Path;

use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Continues the fixture's pipeline (its lake and checkpoint as an older build left them) with
/// the file in `later/`, and checks each of `tables` equals this build running every file
/// from scratch.
async fn continued_equals_from_scratch(fixture: &str, tables: &[&str]) -> Result<(), TestError> {
    let fixture = weir_tests::repo_root().join("tests/fixtures").join(fixture);
    let dir = tempfile::tempdir()?;
    let old = dir.path().join("old");
    copy_dir(&fixture, &old)?;
    std::fs::copy(old.join("later/2.json"), old.join("data/2.json"))?;
    let data = old.join("data").display().to_string();
    let env = [("DATA", data.as_str())];
    let continued = run_pipeline_with(&old.join("p.sql"), &old.join("lake"), &env, true).await?;
    assert_eq!(
        continued.epochs.first().map(|e| e.epoch),
        Some(3),
        "the run goes on after the two committed epochs"
    );

    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh)?;
    std::fs::copy(old.join("p.sql"), fresh.join("p.sql"))?;
    run_pipeline_with(&fresh.join("p.sql"), &fresh.join("lake"), &env, true).await?;

    let continued = lake_context(&old.join("lake")).await?;
    let from_scratch = lake_context(&fresh.join("lake")).await?;
    for table in tables {
        let sql = format!("SELECT * FROM {table}");
        let rows = sorted_rows(&continued, &sql).await?;
        assert!(!rows.is_empty(), "{table} is empty");
        assert_eq!(rows, sorted_rows(&from_scratch, &sql).await?, "{table}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_the_landed_build_restores() -> Result<(), TestError> {
    continued_equals_from_scratch("landed_checkpoint", &["bronze", "per_10m", "sessions"]).await
}

/// `tests/fixtures/dedupe_format_1`: two epochs of a dedupe on one text id (and one on two
/// columns) written by the build whose dedupe state held every key in Arrow's row format. The
/// third file re-sends ids of the first two: they must still be found as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedupe_state_of_format_1_restores_and_still_drops_old_ids() -> Result<(), TestError> {
    continued_equals_from_scratch("dedupe_format_1", &["by_id", "by_user_amount"]).await
}
