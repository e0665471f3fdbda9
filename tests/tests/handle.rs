//! A running pipeline is controlled through its handle (what `weir serve` builds on): it
//! reports each epoch while it runs, and stops after the current epoch when asked.

use std::time::Duration;

use weir_engine::runtime::{RunOptions, RunState};
use weir_tests::{assemble_pipeline, lake_context, sorted_rows, TestError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_run_reports_progress_and_stops_when_asked() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("a.json"), "{\"id\":1}\n{\"id\":2}\n")?;
    let sql = format!(
        "CREATE SOURCE ev (id BIGINT NOT NULL)
         WITH (connector = 'files', path = '{}', settle_time = '0s');
         CREATE TABLE t AS SELECT id FROM ev;",
        data.display()
    );
    std::fs::write(dir.path().join("p.sql"), sql)?;
    let lake = dir.path().join("lake");
    let pipeline = assemble_pipeline(&dir.path().join("p.sql"), &lake).await?;
    let options = RunOptions {
        once: false,
        trigger_interval: Duration::from_millis(50),
        ..RunOptions::default()
    };
    let running = pipeline.spawn(options);
    let handle = running.handle.clone();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while handle.latest().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no epoch reported within 30 s");
    assert_eq!(handle.state(), RunState::Running { epoch: 1 });
    assert_eq!(handle.latest().map(|r| r.total_in()), Some(2));
    // Still running (no --once): a new file is read by a later epoch.
    std::fs::write(data.join("b.json"), "{\"id\":3}\n")?;
    tokio::time::timeout(Duration::from_secs(30), async {
        while handle.latest().map(|r| r.epoch) != Some(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    handle.stop();
    let (_pipeline, result) = tokio::time::timeout(Duration::from_secs(30), running.task).await??;
    result?;
    assert_eq!(handle.state(), RunState::Finished);
    let ctx = lake_context(&lake).await?;
    assert_eq!(
        sorted_rows(&ctx, "SELECT id FROM t").await?,
        ["1", "2", "3"]
    );
    Ok(())
}
