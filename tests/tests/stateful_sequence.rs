//! Stateful steps in sequence: a window over the output of another window. The rows the first
//! window releases at a watermark are on time for the second (which judges lateness by the
//! previous epoch's watermark, as Spark does), so the second window equals the batch answer
//! over several epochs, a restart and a drain (before: every row late, 0 rows).

use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

const PIPELINE: &str = "
CREATE SOURCE ev (id TEXT NOT NULL, u TEXT NOT NULL, ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5 minutes')
WITH (connector = 'files', path = '{data}', max_files_per_trigger = 1, settle_time = '0s');
CREATE TABLE bronze AS SELECT id, u, ts FROM ev;

-- Minute totals feeding hourly totals.
CREATE VIEW per_minute AS SELECT window_start AS minute, u, count(*) AS n
FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, u;
CREATE TABLE hourly AS SELECT window_start, u, sum(n) AS n
FROM TUMBLE(per_minute, minute, INTERVAL '1 hour') GROUP BY window_start, window_end, u;

-- A window per id (one row per id and minute: a dedupe) feeding a tumble per user.
CREATE VIEW per_id AS SELECT window_start AS minute, id, u
FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, id, u;
CREATE TABLE ids_per_user AS SELECT window_start, u, count(*) AS ids
FROM TUMBLE(per_id, minute, INTERVAL '10 minutes') GROUP BY window_start, window_end, u;

-- Both steps in one query: the inner window runs as a hidden step of the table.
CREATE TABLE hourly_in_one_query AS
WITH minutes AS (SELECT window_start AS minute, u, count(*) AS n
                 FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, u)
SELECT window_start, u, sum(n) AS n
FROM TUMBLE(minutes, minute, INTERVAL '1 hour') GROUP BY window_start, window_end, u;

-- The same in Spark's form: window() over a WITH query grouped by window().
CREATE TABLE hourly_spark AS
WITH m AS (SELECT window.start AS minute, u, count(*) AS n FROM ev
           GROUP BY window(ts, '1 minute'), u)
SELECT window.start AS window_start, u, sum(n) AS n FROM m
GROUP BY window(minute, '1 hour'), u;
";

/// Events of hour `hour` (00:00-02:59 on 2024-03-01): every 20 s, users a-c in turn, ids that
/// repeat within a minute (duplicates for the per-id window), shuffled within the file.
fn events(hour: u32) -> String {
    let mut lines = Vec::new();
    for step in 0..180u32 {
        let (minute, second) = (step / 3, (step % 3) * 20);
        let user = ["a", "b", "c"][(step % 3) as usize];
        let id = format!("{hour}-{minute}-{}", step % 2);
        lines.push(format!(
            r#"{{"id":"{id}","u":"{user}","ts":"2024-03-01T{hour:02}:{minute:02}:{second:02}Z"}}"#
        ));
    }
    // A fixed shuffle: out of order within the file, never by more than the 5-minute delay.
    lines.sort_by_key(|l| {
        let h = l
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        h % 4
    });
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_windows_equal_the_batch_answer() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let sql = PIPELINE.replace("{data}", &data.display().to_string());
    let pipeline = dir.path().join("p.sql");
    std::fs::write(&pipeline, sql)?;
    let lake = dir.path().join("lake");
    // Two epochs, a restart, one more epoch and a drain.
    std::fs::write(data.join("0.json"), events(0))?;
    std::fs::write(data.join("1.json"), events(1))?;
    run_pipeline_with(&pipeline, &lake, &[], false).await?;
    std::fs::write(data.join("2.json"), events(2))?;
    let last = run_pipeline_with(&pipeline, &lake, &[], true).await?;
    let late: u64 = last.epochs.iter().flat_map(|e| e.late_rows.values()).sum();
    assert_eq!(late, 0, "no row is late: {:?}", last.epochs);

    let ctx = lake_context(&lake).await?;
    let hourly = sorted_rows(&ctx, "SELECT * FROM hourly").await?;
    let batch_hourly = sorted_rows(
        &ctx,
        "SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMP '1970-01-01T00:00:00Z') AS w, u,
                count(*) AS n
         FROM bronze GROUP BY 1, 2",
    )
    .await?;
    assert_eq!(hourly.len(), 9, "{hourly:#?}");
    assert_eq!(hourly, batch_hourly);
    for table in ["hourly_in_one_query", "hourly_spark"] {
        let rows = sorted_rows(&ctx, &format!("SELECT * FROM {table}")).await?;
        assert_eq!(rows, batch_hourly, "{table}");
    }

    let ids = sorted_rows(&ctx, "SELECT * FROM ids_per_user").await?;
    let batch_ids = sorted_rows(
        &ctx,
        "SELECT date_bin(INTERVAL '10 minutes', minute, TIMESTAMP '1970-01-01T00:00:00Z') AS w,
                u, count(*) AS ids
         FROM (SELECT DISTINCT date_bin(INTERVAL '1 minute', ts,
                   TIMESTAMP '1970-01-01T00:00:00Z') AS minute, id, u FROM bronze)
         GROUP BY 1, 2",
    )
    .await?;
    assert_eq!(ids.len(), 54, "{ids:#?}");
    assert_eq!(ids, batch_ids);
    Ok(())
}

/// `weir explain` lists each stateful step of a table as its own node, with its operator,
/// output mode and state; a table that reads an update-mode table is refused (it would count
/// every revision of a window's value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_are_explained_and_update_mode_tables_feed_nothing() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let sql = PIPELINE.replace("{data}", &dir.path().display().to_string());
    let planned = weir_tests::plan_sql(&sql).await?;
    let explained = planned.explain().await?;
    assert!(
        explained.contains(
            "hourly_in_one_query__step1 <- [ev] (a step of `hourly_in_one_query`, not stored) \
             [window TUMBLE on ts: size 1min; append output; state: one row per open (window, \
             keys) group]"
        ),
        "{explained}"
    );
    assert!(
        explained.contains("hourly_in_one_query <- [hourly_in_one_query__step1]"),
        "{explained}"
    );
    assert!(
        explained.contains("StatefulStepExec: window TUMBLE on minute: size 1h"),
        "{explained}"
    );

    let update_fed = format!(
        "{}\nCREATE TABLE minutes WITH (output_mode = 'update') AS
         SELECT window_start, window_end, u, count(*) AS n
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, u;
         CREATE TABLE from_updates AS SELECT u, n FROM minutes;",
        PIPELINE.replace("{data}", &dir.path().display().to_string())
    );
    let err = match weir_tests::plan_sql(&update_fed).await {
        Ok(_) => panic!("a table reading an update-mode table was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`from_updates` reads `minutes`, a table in update output mode"),
        "{err}"
    );
    Ok(())
}
