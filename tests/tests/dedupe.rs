//! Deduplication within the watermark (Flink / RisingWave's `ROW_NUMBER() ... WHERE rn = 1`):
//! over random, out-of-order events with duplicates and late rows, cut into several epochs
//! with a restart and a drain, every table equals the batch query over the rows that were on
//! time (those not dead-lettered as late).

use std::path::{Path, PathBuf};

use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

const PIPELINE: &str = "
CREATE SOURCE ev (seq BIGINT NOT NULL, id TEXT NOT NULL, u TEXT NOT NULL, ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5 minutes')
WITH (connector = 'files', path = '{data}', max_files_per_trigger = 1, settle_time = '0s',
      late_data = 'dead_letter');
CREATE TABLE bronze AS SELECT seq, id, u, ts FROM ev;

-- Keep the earliest row of each id (append: emitted once the watermark passes it).
CREATE TABLE first_rows AS
SELECT seq, id, u, ts
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY ts) AS rn FROM ev) WHERE rn = 1;

-- Keep the latest row of each id (update: a newer row replaces the key's row).
CREATE TABLE last_rows AS
SELECT seq, id, u, ts
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY ts DESC) AS rn FROM ev) WHERE rn = 1;

-- The same two in PostgreSQL's form.
CREATE TABLE first_distinct_on AS SELECT DISTINCT ON (id) seq, id, u, ts FROM ev ORDER BY id, ts;
CREATE TABLE last_distinct_on AS
SELECT DISTINCT ON (id) seq, id, u, ts FROM ev ORDER BY id, ts DESC;

-- Several keys, no ORDER BY: the first row to arrive (kept until the watermark passes it).
CREATE TABLE first_arrived AS
SELECT id, u
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id, u) AS rn FROM ev) WHERE rn = 1;
CREATE TABLE first_arrived_distinct_on AS SELECT DISTINCT ON (id, u) id, u FROM ev;

-- Spark's deduplicate-then-aggregate: dedupe on id, then a 10-minute window per user.
CREATE VIEW deduped AS
SELECT seq, id, u, ts
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY ts) AS rn FROM ev) WHERE rn = 1;
CREATE TABLE per_user AS
SELECT window_start, u, count(*) AS events
FROM TUMBLE(deduped, ts, INTERVAL '10 minutes') GROUP BY window_start, window_end, u;
";

/// A small deterministic generator (no dependency for a test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Six files, one per epoch, each covering ten minutes of 2024-03-01 from 10:00. Every event
/// has its own id; a third of them have a duplicate 10-110 s earlier or later, in the same
/// file or the next; from the third file on, five rows per file repeat ids of two files
/// before with a time well behind the watermark (late).
fn files() -> Vec<String> {
    let mut rng = Lcg(42);
    let mut files: Vec<Vec<(String, i64, String)>> = vec![Vec::new(); 6];
    for (f, _) in (0..6).map(|f| (f, ())) {
        for i in 0..50 {
            let id = format!("e{f}-{i}");
            let t = (f as i64) * 600 + rng.next(600) as i64;
            let user = format!("u{}", rng.next(4));
            files[f].push((id.clone(), t, user.clone()));
            if rng.next(3) == 0 {
                let shift = (10 + rng.next(100) as i64) * if rng.next(2) == 0 { -1 } else { 1 };
                let into = if f < 5 && rng.next(2) == 0 { f + 1 } else { f };
                files[into].push((id, t + shift, format!("{user}-dup")));
            }
        }
    }
    for f in 2..6 {
        for i in 0..5 {
            let (id, t, _) = files[f - 2][i * 7].clone();
            files[f].push((id, t - 60, "late".to_string()));
        }
    }
    let mut seq = 0;
    files
        .into_iter()
        .map(|mut rows| {
            // Out of order within the file.
            for i in (1..rows.len()).rev() {
                rows.swap(i, rng.next(i as u64 + 1) as usize);
            }
            rows.into_iter()
                .map(|(id, t, u)| {
                    seq += 1;
                    // Epoch milliseconds.
                    let ts = (1_709_287_200 + t) * 1000;
                    format!(r#"{{"seq":{seq},"id":"{id}","u":"{u}","ts":{ts}}}"#)
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// Writes [`PIPELINE`] under `dir`; returns its input folder, pipeline file and lake.
fn setup(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), TestError> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let pipeline = dir.join("p.sql");
    std::fs::write(
        &pipeline,
        PIPELINE.replace("{data}", &data.display().to_string()),
    )?;
    Ok((data, pipeline, dir.join("lake")))
}

/// The on-time rows: bronze without the rows dead-lettered as late.
const ON_TIME: &str = "(SELECT * FROM bronze WHERE seq NOT IN (
    SELECT CAST(regexp_match(raw, '\"seq\":([0-9]+)')[1] AS BIGINT) FROM _dead_letter.ev))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_equals_row_number_over_on_time_rows() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let (data, pipeline, lake) = setup(dir.path())?;
    let files = files();
    // Three epochs, a restart, three more and a drain.
    for (i, text) in files.iter().enumerate().take(3) {
        std::fs::write(data.join(format!("{i}.json")), text)?;
    }
    run_pipeline_with(&pipeline, &lake, &[], false).await?;
    for (i, text) in files.iter().enumerate().skip(3) {
        std::fs::write(data.join(format!("{i}.json")), text)?;
    }
    let last = run_pipeline_with(&pipeline, &lake, &[], true).await?;
    assert!(last
        .epochs
        .last()
        .is_some_and(|e| e.watermark_ms == Some(i64::MAX)));

    let ctx = lake_context(&lake).await?;
    // The 20 rows written late are dead-lettered (so are duplicates that landed in the next
    // file behind the watermark).
    let late = sorted_rows(
        &ctx,
        "SELECT DISTINCT raw FROM _dead_letter.ev WHERE raw LIKE '%\"u\":\"late\"%'",
    )
    .await?;
    assert_eq!(late.len(), 20, "{late:?}");
    let oracle = |order: &str, keys: &str, columns: &str| {
        format!(
            "SELECT {columns} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} {order}) \
             AS rn FROM {ON_TIME}) WHERE rn = 1"
        )
    };
    let first = sorted_rows(&ctx, "SELECT * FROM first_rows").await?;
    assert_eq!(first.len(), 300, "one row per id");
    assert_eq!(
        first,
        sorted_rows(&ctx, &oracle("ORDER BY ts", "id", "seq, id, u, ts")).await?
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM first_distinct_on").await?,
        first
    );
    let last = sorted_rows(&ctx, "SELECT * FROM last_rows").await?;
    assert_eq!(
        last,
        sorted_rows(&ctx, &oracle("ORDER BY ts DESC", "id", "seq, id, u, ts")).await?
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM last_distinct_on").await?,
        last
    );
    let first_arrived = sorted_rows(&ctx, "SELECT * FROM first_arrived").await?;
    assert_eq!(
        first_arrived,
        sorted_rows(&ctx, &oracle("", "id, u", "id, u")).await?
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM first_arrived_distinct_on").await?,
        first_arrived
    );
    let per_user = sorted_rows(&ctx, "SELECT * FROM per_user").await?;
    let batch_per_user = sorted_rows(
        &ctx,
        &format!(
            "SELECT date_bin(INTERVAL '10 minutes', ts, TIMESTAMP '1970-01-01T00:00:00Z'), u, \
                    count(*) FROM ({}) GROUP BY 1, 2",
            oracle("ORDER BY ts", "id", "ts, u")
        ),
    )
    .await?;
    assert_eq!(per_user, batch_per_user);
    Ok(())
}

/// Over a long generated stream (1% duplicates, 1% late) the dedupe keeps only the keys inside
/// the watermark horizon: its state stays flat while the stream grows, and no duplicate event
/// id reaches the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_state_stays_bounded_over_a_long_stream() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE ev (event_id TEXT NOT NULL, user_id TEXT, event_time TIMESTAMP NOT NULL,
             WATERMARK FOR event_time AS event_time - INTERVAL '2 minutes')
         WITH (connector = 'generator', events = 60000, max_events_per_trigger = 1000,
               late_ratio = 0.01, malformed_ratio = 0);
         CREATE TABLE unique_events AS
         SELECT event_id, user_id, event_time
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY event_time) AS rn
               FROM ev)
         WHERE rn = 1;",
    )?;
    let lake = dir.path().join("lake");
    let run = run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], true).await?;
    let held: Vec<u64> = run
        .epochs
        .iter()
        .map(|e| e.open_windows.get("unique_events").copied().unwrap_or(0))
        .collect();
    let first_half = held[5..30].iter().max().copied().unwrap_or(0);
    let second_half = held[30..held.len() - 1].iter().max().copied().unwrap_or(0);
    assert!(first_half > 0, "no state at all: {held:?}");
    assert!(
        second_half as f64 <= first_half as f64 * 1.5,
        "state grows with the stream: {held:?}"
    );
    let rows = run
        .summary
        .rows_out
        .get("unique_events")
        .copied()
        .unwrap_or(0);
    assert!(
        rows > 20 * second_half,
        "{rows} rows, {second_half} keys held"
    );
    let ctx = lake_context(&lake).await?;
    let duplicated = sorted_rows(
        &ctx,
        "SELECT event_id FROM unique_events GROUP BY event_id HAVING count(*) > 1",
    )
    .await?;
    assert!(duplicated.is_empty(), "{duplicated:?}");
    Ok(())
}

/// A restart remembers the ids it has seen: an event sent again after the pipeline stopped
/// and started is not written a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_again_after_a_restart_is_not_written_twice() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let (data, pipeline, lake) = setup(dir.path())?;
    let event = r#"{"seq":1,"id":"order-1","u":"ann","ts":1709287200000}"#;
    std::fs::write(data.join("0.json"), event)?;
    run_pipeline_with(&pipeline, &lake, &[], false).await?;
    std::fs::write(data.join("1.json"), event)?;
    run_pipeline_with(&pipeline, &lake, &[], true).await?;
    let ctx = lake_context(&lake).await?;
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM bronze").await?.len(), 2);
    for table in [
        "first_rows",
        "last_rows",
        "first_arrived",
        "first_arrived_distinct_on",
        "first_distinct_on",
    ] {
        let rows = sorted_rows(&ctx, &format!("SELECT id FROM {table}")).await?;
        assert_eq!(rows, vec!["order-1".to_string()], "{table}");
    }
    Ok(())
}

/// `weir validate` warns where results or state may not be what the author expects: a GROUP
/// BY over a source without a window (per-epoch numbers) and a dedupe with no event time
/// (state that only grows); per-epoch SQL over a window's output is not warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_warns_about_per_epoch_groups_and_unbounded_dedupes() -> Result<(), TestError> {
    // No watermark anywhere: per-epoch groups and a dedupe whose keys are never forgotten.
    let planned = weir_tests::plan_sql(
        "CREATE SOURCE ev (id TEXT NOT NULL, u TEXT, ts TIMESTAMP NOT NULL)
         WITH (connector = 'files', path = '/nonexistent', format = 'json');
         CREATE TABLE per_user AS SELECT u, count(*) AS n FROM ev GROUP BY u;
         CREATE TABLE unique_ids AS SELECT id, u
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id) AS rn FROM ev) WHERE rn = 1;",
    )
    .await?;
    let warnings: Vec<String> = planned
        .warnings
        .iter()
        .map(|w| w.as_warning().to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("`per_user` groups, ranks or deduplicates rows within each epoch"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains("`unique_ids` deduplicates on (id) without an event time"),
        "{warnings:#?}"
    );
    assert!(warnings.iter().all(|w| w.contains(": warning: ")));

    // A rank within each window of a windowed view: whole windows arrive together.
    let planned = weir_tests::plan_sql(
        "CREATE SOURCE timed (id TEXT NOT NULL, u TEXT, ts TIMESTAMP NOT NULL,
             WATERMARK FOR ts AS ts - INTERVAL '1 minute')
         WITH (connector = 'files', path = '/nonexistent', format = 'json');
         CREATE VIEW minutes AS SELECT window_start, u, count(*) AS n
         FROM TUMBLE(timed, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, u;
         CREATE TABLE ranked AS SELECT window_start, u,
             rank() OVER (PARTITION BY window_start ORDER BY n DESC) AS r FROM minutes;",
    )
    .await?;
    assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
    Ok(())
}
