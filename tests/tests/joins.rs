//! Interval joins of two streams (Flink's interval join, Spark's stream-stream join with a
//! time range): over random, out-of-order events with late rows, cut into several epochs with
//! a restart and a drain, every table equals the batch join over the rows that were on time.
//! Outer joins emit every unmatched row exactly once, with NULLs; a window over a join's
//! output loses nothing to lateness.

use std::path::{Path, PathBuf};

use weir_tests::{lake_context, plan_sql, run_pipeline_with, sorted_rows, TestError};

const PIPELINE: &str = "
CREATE SOURCE added (seq BIGINT NOT NULL, u TEXT NOT NULL, ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5 minutes')
WITH (connector = 'files', path = '{data}/added', max_files_per_trigger = 1,
      settle_time = '0s', late_data = 'dead_letter');
CREATE SOURCE checkouts (seq BIGINT NOT NULL, u TEXT NOT NULL, ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5 minutes')
WITH (connector = 'files', path = '{data}/checkouts', max_files_per_trigger = 1,
      settle_time = '0s', late_data = 'dead_letter');
CREATE TABLE bronze_added AS SELECT * FROM added;
CREATE TABLE bronze_checkouts AS SELECT * FROM checkouts;

{joins}

-- A window over a join's output: pairs per 10 minutes of the add, per user. A pair can be
-- found 40 minutes after its add, when that add's window would long be closed at the
-- watermark; the window downstream holds back by the join's bound, so none is late.
CREATE VIEW pairs AS
SELECT a.u AS u, a.ts AS added_ts, c.seq AS c_seq
FROM added a JOIN checkouts c ON a.u = c.u AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '40 minutes';
CREATE TABLE pairs_per_10m AS
SELECT window_start, u, count(*) AS pairs
FROM TUMBLE(pairs, added_ts, INTERVAL '10 minutes') GROUP BY window_start, window_end, u;
";

/// `{kind}` joins of the two streams, as tables named after the kind; also in the batch oracle.
fn join_sql(kind: &str, added: &str, checkouts: &str) -> String {
    join_within(kind, added, checkouts, 15)
}

/// [`join_sql`] with a bound of `minutes`.
fn join_within(kind: &str, added: &str, checkouts: &str, minutes: u32) -> String {
    format!(
        "SELECT a.seq AS a_seq, a.u AS u, a.ts AS added_ts, c.seq AS c_seq, c.ts AS checkout_ts
         FROM {added} a {kind} JOIN {checkouts} c
           ON a.u = c.u AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '{minutes} minutes'"
    )
}

const KINDS: [(&str, &str); 4] = [
    ("inner_pairs", "INNER"),
    ("left_pairs", "LEFT"),
    ("right_pairs", "RIGHT"),
    ("full_pairs", "FULL OUTER"),
];

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

/// Six files per stream, one per epoch, each covering about ten minutes of 2024-03-01 from
/// 10:00 (overlapping the one before), out of order; from the third file on, a few rows per file are 20 minutes behind (late).
/// Sequence numbers are unique across both streams.
fn files(rng: &mut Lcg, seq: &mut u64, with_late_rows: bool) -> Vec<String> {
    (0..6)
        .map(|f| {
            let mut rows: Vec<(String, i64)> = (0..30)
                .map(|_| {
                    let u = format!("u{}", rng.next(6));
                    // Up to 280 s before the file's ten minutes: still on time, but after
                    // rows of earlier files that a join must still hold.
                    (u, (f * 600 - 280).max(0) + rng.next(880) as i64)
                })
                .collect();
            if f >= 2 && with_late_rows {
                for _ in 0..3 {
                    rows.push(("u1".to_string(), f * 600 - 1200 + rng.next(300) as i64));
                }
            }
            for i in (1..rows.len()).rev() {
                rows.swap(i, rng.next(i as u64 + 1) as usize);
            }
            rows.into_iter()
                .map(|(u, t)| {
                    *seq += 1;
                    let ts = (1_709_287_200 + t) * 1000;
                    format!(r#"{{"seq":{seq},"u":"{u}","ts":{ts}}}"#)
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// Writes the pipeline under `dir`; returns its data folder, pipeline file and lake.
fn setup(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), TestError> {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("added"))?;
    std::fs::create_dir_all(data.join("checkouts"))?;
    let joins: Vec<String> = KINDS
        .iter()
        .map(|(table, kind)| {
            format!(
                "CREATE TABLE {table} AS {};",
                join_sql(kind, "added", "checkouts")
            )
        })
        .chain(std::iter::once(
            "-- Cart abandonment: adds with no checkout within 15 minutes.
             CREATE TABLE abandoned AS
             SELECT a.seq AS a_seq, a.u AS u, a.ts AS added_ts
             FROM added a LEFT JOIN checkouts c
               ON a.u = c.u AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '15 minutes'
             WHERE c.seq IS NULL;"
                .to_string(),
        ))
        .collect();
    let pipeline = dir.join("p.sql");
    std::fs::write(
        &pipeline,
        PIPELINE
            .replace("{data}", &data.display().to_string())
            .replace("{joins}", &joins.join("\n")),
    )?;
    Ok((data, pipeline, dir.join("lake")))
}

/// The rows of `bronze` that no operator dead-lettered as late.
fn on_time(bronze: &str) -> String {
    format!(
        "(SELECT * FROM {bronze} WHERE seq NOT IN (
            SELECT CAST(regexp_match(raw, '\"seq\":([0-9]+)')[1] AS BIGINT) FROM _dead_letter.added
            UNION ALL
            SELECT CAST(regexp_match(raw, '\"seq\":([0-9]+)')[1] AS BIGINT)
            FROM _dead_letter.checkouts))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_equal_the_batch_join_over_on_time_rows() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let (data, pipeline, lake) = setup(dir.path())?;
    let (mut rng, mut seq) = (Lcg(7), 0);
    let added = files(&mut rng, &mut seq, true);
    let checkouts = files(&mut rng, &mut seq, true);
    let write = |i: usize| -> Result<(), TestError> {
        std::fs::write(data.join(format!("added/{i}.json")), &added[i])?;
        std::fs::write(data.join(format!("checkouts/{i}.json")), &checkouts[i])?;
        Ok(())
    };
    // Three epochs, a restart, three more and a drain.
    for i in 0..3 {
        write(i)?;
    }
    run_pipeline_with(&pipeline, &lake, &[], false).await?;
    for i in 3..6 {
        write(i)?;
    }
    let last = run_pipeline_with(&pipeline, &lake, &[], true).await?;
    assert!(last
        .epochs
        .last()
        .is_some_and(|e| e.watermark_ms == Some(i64::MAX)));

    let ctx = lake_context(&lake).await?;
    let late = sorted_rows(
        &ctx,
        &format!(
            "SELECT seq FROM bronze_added WHERE seq NOT IN (SELECT seq FROM {})",
            on_time("bronze_added")
        ),
    )
    .await?;
    assert!(!late.is_empty(), "some rows were late");
    let (on_time_added, on_time_checkouts) = (on_time("bronze_added"), on_time("bronze_checkouts"));
    for (table, kind) in KINDS {
        let streamed = sorted_rows(&ctx, &format!("SELECT * FROM {table}")).await?;
        let batch = sorted_rows(&ctx, &join_sql(kind, &on_time_added, &on_time_checkouts)).await?;
        assert!(!batch.is_empty());
        assert_eq!(streamed, batch, "{table}");
    }
    let abandoned = sorted_rows(&ctx, "SELECT * FROM abandoned").await?;
    let batch_abandoned = sorted_rows(
        &ctx,
        &format!(
            "SELECT a_seq, u, added_ts FROM ({}) WHERE c_seq IS NULL",
            join_sql("LEFT", &on_time_added, &on_time_checkouts)
        ),
    )
    .await?;
    assert!(!batch_abandoned.is_empty());
    assert_eq!(abandoned, batch_abandoned);
    let per_10m = sorted_rows(&ctx, "SELECT * FROM pairs_per_10m").await?;
    let batch_per_10m = sorted_rows(
        &ctx,
        &format!(
            "SELECT date_bin(INTERVAL '10 minutes', added_ts, TIMESTAMP '1970-01-01T00:00:00Z'), \
                    u, count(*) FROM ({}) GROUP BY 1, 2",
            join_within("INNER", &on_time_added, &on_time_checkouts, 40)
        ),
    )
    .await?;
    assert_eq!(per_10m, batch_per_10m);
    Ok(())
}

/// Two windowed aggregates of the same sliding windows joined on the window and a key
/// (orders against checkouts per user per 10-minute window every 5 minutes): each window
/// pair meets in the epoch both windows close; a FULL join keeps the windows of one side
/// alone. Equal to the batch join of the two windows' tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_of_two_windowed_streams_equals_the_join_of_their_tables() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("added"))?;
    std::fs::create_dir_all(data.join("checkouts"))?;
    let counts = |name: &str, source: &str| {
        format!(
            "CREATE TABLE {name} AS SELECT window_start, window_end, u, count(*) AS n
             FROM HOP({source}, ts, INTERVAL '5 minutes', INTERVAL '10 minutes')
             GROUP BY window_start, window_end, u;"
        )
    };
    let joined = |kind: &str, added: &str, checkouts: &str| {
        format!(
            "SELECT a.window_end AS a_end, c.window_end AS c_end, a.u AS a_u, c.u AS c_u,
                    a.n AS added, c.n AS checkouts
             FROM {added} a {kind} JOIN {checkouts} c
               ON a.window_start = c.window_start AND a.window_end = c.window_end AND a.u = c.u"
        )
    };
    let sql = PIPELINE
        .split("CREATE TABLE bronze_added")
        .next()
        .unwrap_or_default()
        .replace("{data}", &data.display().to_string())
        + &counts("added_counts", "added")
        + &counts("checkout_counts", "checkouts")
        + &format!(
            "CREATE TABLE per_window AS {};\nCREATE TABLE per_window_full AS {};",
            joined("INNER", "added_counts", "checkout_counts"),
            joined("FULL OUTER", "added_counts", "checkout_counts")
        );
    let pipeline = dir.path().join("p.sql");
    std::fs::write(&pipeline, sql)?;
    let lake = dir.path().join("lake");
    let (mut rng, mut seq) = (Lcg(11), 0);
    let added = files(&mut rng, &mut seq, false);
    let checkouts = files(&mut rng, &mut seq, false);
    for i in 0..6 {
        std::fs::write(data.join(format!("added/{i}.json")), &added[i])?;
        std::fs::write(data.join(format!("checkouts/{i}.json")), &checkouts[i])?;
        if i == 2 {
            run_pipeline_with(&pipeline, &lake, &[], false).await?;
        }
    }
    run_pipeline_with(&pipeline, &lake, &[], true).await?;
    let ctx = lake_context(&lake).await?;
    let mut sizes = Vec::new();
    for (table, kind) in [("per_window", "INNER"), ("per_window_full", "FULL OUTER")] {
        let streamed = sorted_rows(&ctx, &format!("SELECT * FROM {table}")).await?;
        let batch = sorted_rows(&ctx, &joined(kind, "added_counts", "checkout_counts")).await?;
        assert_eq!(streamed, batch, "{table}");
        sizes.push(batch.len());
    }
    assert!(
        sizes[0] > 20 && sizes[1] > sizes[0],
        "windows on both sides, and some on one side only: {sizes:?}"
    );
    Ok(())
}

/// `weir explain` shows the join as a stateful step with its bound, and a join without a
/// bound names the columns to bound.
#[tokio::test]
async fn explain_shows_the_join_and_a_join_without_a_bound_says_what_to_add(
) -> Result<(), TestError> {
    let sources = "CREATE SOURCE added (u TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 minute')
                   WITH (connector = 'generator', events = 10);
                   CREATE SOURCE checkouts (u TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 minute')
                   WITH (connector = 'generator', events = 10);";
    let planned = plan_sql(&format!(
        "{sources} CREATE TABLE t AS SELECT a.u, c.ts FROM added a LEFT JOIN checkouts c
         ON a.u = c.u AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '30 minutes';"
    ))
    .await?;
    let explained = planned.explain().await?;
    assert!(
        explained.contains("LEFT OUTER interval join: c.ts - a.ts within [0s, 30m]"),
        "{explained}"
    );
    let refused = plan_sql(&format!(
        "{sources} CREATE TABLE t AS SELECT a.u, c.ts FROM added a JOIN checkouts c ON a.u = c.u;"
    ))
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        refused.contains("without a bound")
            && refused.contains("AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '30 minutes'"),
        "{refused}"
    );
    Ok(())
}

/// Over a long generated stream the join keeps only the rows inside its bound and the
/// watermark: its state stays flat while the stream grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_stays_bounded_over_a_long_stream() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE ev (event_type TEXT, user_id TEXT, event_time TIMESTAMP NOT NULL,
             WATERMARK FOR event_time AS event_time - INTERVAL '2 minutes')
         WITH (connector = 'generator', events = 60000, max_events_per_trigger = 1000,
               late_ratio = 0.01, malformed_ratio = 0);
         CREATE VIEW adds AS SELECT user_id, event_time FROM ev WHERE event_type = 'add_to_cart';
         CREATE VIEW orders AS SELECT user_id, event_time FROM ev WHERE event_type = 'purchase';
         CREATE TABLE abandoned AS
         SELECT a.user_id, a.event_time FROM adds a LEFT JOIN orders o
           ON a.user_id = o.user_id
          AND o.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5 minutes'
         WHERE o.user_id IS NULL;",
    )?;
    let lake = dir.path().join("lake");
    let run = run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], true).await?;
    let held: Vec<u64> = run
        .epochs
        .iter()
        .map(|e| e.open_windows.get("abandoned").copied().unwrap_or(0))
        .collect();
    let first_half = held[5..30].iter().max().copied().unwrap_or(0);
    let second_half = held[30..held.len() - 1].iter().max().copied().unwrap_or(0);
    assert!(first_half > 0, "no state at all: {held:?}");
    assert!(
        second_half as f64 <= first_half as f64 * 1.5,
        "state grows with the stream: {held:?}"
    );
    let rows = run.summary.rows_out.get("abandoned").copied().unwrap_or(0);
    assert!(rows > 5 * second_half, "{rows} rows, {second_half} held");
    Ok(())
}
