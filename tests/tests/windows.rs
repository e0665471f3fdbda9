//! Windowed aggregation (TUMBLE, HOP) over several epochs equals the batch answer over the
//! events that were not late. Events are seeded-random, out of order within the watermark
//! delay, and some are hours late; the run is split over two processes (the second drains), so
//! window state goes through a checkpoint.

use std::path::Path;

use weir_engine::source::generator::ecommerce::splitmix;
use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

const START_MS: i64 = 1_709_251_200_000; // 2024-03-01T00:00:00Z

/// Writes `files` JSON files of events; file f covers minutes [10f, 10f + 10) with up to a
/// minute of disorder, and from file 3 on a few events an hour old (certainly late).
fn write_events(dir: &Path, files: i64, seed: u64) -> Result<usize, TestError> {
    std::fs::create_dir_all(dir)?;
    let mut late = 0;
    let mut r = seed;
    let mut next = || {
        r = splitmix(r);
        r
    };
    for f in 0..files {
        let mut lines = Vec::new();
        for i in 0..60 {
            let base = START_MS + f * 600_000 + i * 10_000;
            let ts = base - (next() % 60_000) as i64;
            let k = ["a", "b", "c"][(next() % 3) as usize];
            let u = format!("u{}", next() % 7);
            let x = (next() % 1000) as f64 / 10.0;
            lines.push(format!(
                r#"{{"k":"{k}","u":"{u}","x":{x},"ts":{ts},"late":false}}"#
            ));
            if f >= 3 && i % 20 == 0 {
                let old = START_MS + (f - 3) * 600_000 + (next() % 60_000) as i64;
                lines.push(format!(
                    r#"{{"k":"{k}","u":"{u}","x":{x},"ts":{old},"late":true}}"#
                ));
                late += 1;
            }
        }
        std::fs::write(dir.join(format!("part-{f:03}.json")), lines.join("\n"))?;
    }
    Ok(late)
}

fn pipeline(dir: &Path, data: &Path, windowed: &str) -> Result<(), TestError> {
    std::fs::write(
        dir.join("p.sql"),
        format!(
            "CREATE SOURCE ev (k TEXT NOT NULL, u TEXT, x DOUBLE, ts TIMESTAMP NOT NULL, late BOOLEAN,
                 WATERMARK FOR ts AS ts - INTERVAL '2 minutes')
             WITH (connector = 'files', path = '{}', max_files_per_trigger = 1);
             CREATE TABLE raw AS SELECT * FROM ev;
             CREATE TABLE windowed AS {windowed};",
            data.display()
        ),
    )?;
    Ok(())
}

const SELECT: &str = "window_start, window_end, k, count(*) AS n, round(sum(x), 6) AS total, \
    min(x) AS lo, max(x) AS hi, count(DISTINCT u) AS users";

/// Runs the pipeline in two processes' worth of epochs: the first 5 files, then the rest and a
/// drain. Returns the late rows counted.
async fn run_split(dir: &Path, lake: &Path) -> Result<u64, TestError> {
    let data = dir.join("data");
    let staged = dir.join("staged");
    std::fs::create_dir_all(&staged)?;
    // Files arrive in two batches; the first run sees only the first batch.
    let mut names: Vec<_> = std::fs::read_dir(&staged)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    for (i, path) in names.iter().enumerate() {
        if i < 5 {
            std::fs::rename(path, data.join(path.file_name().ok_or("name")?))?;
        }
    }
    let first = run_pipeline_with(&dir.join("p.sql"), lake, &[], false).await?;
    assert_eq!(first.epochs.len(), 5);
    for path in names.iter().skip(5) {
        std::fs::rename(path, data.join(path.file_name().ok_or("name")?))?;
    }
    let second = run_pipeline_with(&dir.join("p.sql"), lake, &[], true).await?;
    assert!(
        second
            .epochs
            .last()
            .is_some_and(|e| e.watermark_ms == Some(i64::MAX)),
        "ends with a drain epoch"
    );
    let late: u64 = first
        .epochs
        .iter()
        .chain(&second.epochs)
        .flat_map(|e| e.late_rows.values())
        .sum();
    Ok(late)
}

/// Runs `windowed` (a query over `ev`) and compares its rows with `oracle` (a batch query in
/// which `RAW` stands for the on-time events).
async fn check(windowed: &str, oracle: &str) -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let expected_late = write_events(&dir.path().join("staged"), 9, 7)?;
    pipeline(dir.path(), &data, windowed)?;
    let lake = dir.path().join("lake");
    let late = run_split(dir.path(), &lake).await?;
    assert!(
        late >= expected_late as u64,
        "late rows counted: {late}, written: {expected_late}"
    );

    let ctx = lake_context(&lake).await?;
    let on_time = "(SELECT * FROM raw WHERE NOT late)";
    let expected = sorted_rows(&ctx, &oracle.replace("RAW", on_time)).await?;
    let actual = sorted_rows(&ctx, "SELECT * FROM windowed").await?;
    assert!(expected.len() > 20, "only {} windows", expected.len());
    assert_eq!(actual.len(), expected.len(), "window rows");
    assert!(
        actual == expected,
        "windowed rows differ from the batch answer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_equals_batch_over_on_time_events() -> Result<(), TestError> {
    check(
        &from_style("TUMBLE(ev, ts, INTERVAL '1 minute')"),
        &from_style(TUMBLE_ORACLE_INPUT),
    )
    .await
}

/// Flink's spelling of the same window gives the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flink_table_function_spelling_equals_batch_over_on_time_events() -> Result<(), TestError> {
    check(
        &from_style("TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' MINUTES))"),
        &from_style(TUMBLE_ORACLE_INPUT),
    )
    .await
}

/// `SELECT <the common aggregates> FROM <from> GROUP BY window_start, window_end, k`.
fn from_style(from: &str) -> String {
    format!("SELECT {SELECT} FROM {from} GROUP BY window_start, window_end, k")
}

const TUMBLE_ORACLE_INPUT: &str = "(SELECT *, date_bin(INTERVAL '1 minute', ts) AS window_start, \
          date_bin(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end FROM RAW) AS w";

/// Every 3-minute window sliding by a minute of each row, as a batch query (`RAW` = the rows).
const HOP_ORACLE_INPUT: &str = "(SELECT *, ws AS window_start, ws + INTERVAL '3 minutes' AS window_end FROM \
           (SELECT r.*, date_bin(INTERVAL '1 minute', ts) - CASE o.n WHEN 0 THEN INTERVAL '0 minutes' \
              WHEN 1 THEN INTERVAL '1 minute' ELSE INTERVAL '2 minutes' END AS ws \
            FROM RAW AS r CROSS JOIN (VALUES (0), (1), (2)) AS o(n)) AS s \
           WHERE ts < ws + INTERVAL '3 minutes') AS w";

/// Spark's syntax gives the same rows as TUMBLE, with Spark's column names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_window_in_group_by_equals_batch_over_on_time_events() -> Result<(), TestError> {
    let aggregates = SELECT.trim_start_matches("window_start, window_end, ");
    check(
        &format!(
            "SELECT window.start, window.end, {aggregates} FROM ev \
             GROUP BY window(ts, '1 minute'), k"
        ),
        &format!(
            "SELECT window_start AS start, window_end AS \"end\", {aggregates} \
             FROM {TUMBLE_ORACLE_INPUT} GROUP BY window_start, window_end, k"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_equals_batch_over_on_time_events() -> Result<(), TestError> {
    check(
        &from_style("HOP(ev, ts, INTERVAL '1 minute', INTERVAL '3 minutes')"),
        &from_style(HOP_ORACLE_INPUT),
    )
    .await
}

/// Aggregates whose values repeat across epochs (30-minute windows over 10-minute files, seven
/// users): each DataFusion aggregate, with and without DISTINCT, alone and in combination, and
/// with FILTER, equals the batch answer. A single `count(DISTINCT u)` is what DataFusion's
/// optimizer rewrites into a two-level GROUP BY, which summed per-epoch counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aggregate_over_values_repeated_across_epochs_equals_batch() -> Result<(), TestError>
{
    let aggregates = [
        "count(DISTINCT u) AS d",
        "sum(1) AS n, count(DISTINCT u) AS d",
        "round(sum(x), 6) AS s, count(DISTINCT u) AS d",
        "count(DISTINCT u) AS d, min(x) AS lo, max(x) AS hi",
        "round(sum(DISTINCT x), 6) AS s",
        "round(avg(DISTINCT x), 6) AS a, count(*) AS n",
        "count(DISTINCT u) FILTER (WHERE x > 50) AS d",
        "count(DISTINCT u) AS d, count(DISTINCT x) AS dx",
        "count(*) FILTER (WHERE x > 50) AS n, round(sum(x) FILTER (WHERE u <> 'u1'), 6) AS s",
        "count(x) AS c, round(avg(x), 6) AS a, round(stddev(x), 6) AS sd, median(x) AS m",
        "approx_distinct(u) AS ad, bool_or(x > 90) AS b, count(DISTINCT k) AS dk",
    ];
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    // Only on-time rows: the "late" rows of `write_events` are late for 1-minute windows, not
    // all of them for 30-minute ones.
    write_events(&dir.path().join("staged"), 9, 13)?;
    for entry in std::fs::read_dir(dir.path().join("staged"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let on_time: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"late\":false"))
            .collect();
        std::fs::write(&path, on_time.join("\n"))?;
    }
    let mut sql = format!(
        "CREATE SOURCE ev (k TEXT NOT NULL, u TEXT, x DOUBLE, ts TIMESTAMP NOT NULL, late BOOLEAN,
             WATERMARK FOR ts AS ts - INTERVAL '2 minutes')
         WITH (connector = 'files', path = '{}', max_files_per_trigger = 1);
         CREATE TABLE raw AS SELECT * FROM ev;\n",
        data.display()
    );
    for (i, aggregate) in aggregates.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE TABLE w{i} AS SELECT window_start, window_end, k, {aggregate} \
             FROM TUMBLE(ev, ts, INTERVAL '30 minutes') GROUP BY window_start, window_end, k;\n"
        ));
    }
    std::fs::write(dir.path().join("p.sql"), sql)?;
    let lake = dir.path().join("lake");
    run_split(dir.path(), &lake).await?;
    let ctx = lake_context(&lake).await?;
    let on_time = "(SELECT *, date_bin(INTERVAL '30 minutes', ts) AS window_start, \
        date_bin(INTERVAL '30 minutes', ts) + INTERVAL '30 minutes' AS window_end \
        FROM raw WHERE NOT late) AS w";
    for (i, aggregate) in aggregates.iter().enumerate() {
        let expected = sorted_rows(
            &ctx,
            &format!(
                "SELECT window_start, window_end, k, {aggregate} FROM {on_time} \
                 GROUP BY window_start, window_end, k"
            ),
        )
        .await?;
        let actual = sorted_rows(&ctx, &format!("SELECT * FROM w{i}")).await?;
        assert!(
            expected.len() >= 9,
            "{aggregate}: only {} rows",
            expected.len()
        );
        assert_eq!(actual, expected, "{aggregate}");
    }
    Ok(())
}

/// Sessions per key with a 45-second gap (Spark's `session_window`) equal the batch
/// sessionisation of the on-time events (a new session where the gap since the key's previous
/// event is at least 45 s). Events of consecutive epochs overlap in time, so sessions started in
/// one epoch are extended and bridged by rows of the next, and go through a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_window_equals_batch_sessionisation_of_on_time_events() -> Result<(), TestError> {
    let (windowed, oracle) = sessions_and_oracle();
    check(&windowed, &oracle).await
}

/// Sessions per key with a 45-second gap in Spark's syntax, and the same as a batch query
/// (`RAW` = the rows): a new session where the gap since the key's previous event is at least
/// 45 s.
fn sessions_and_oracle() -> (String, String) {
    let aggregates = SELECT.trim_start_matches("window_start, window_end, ");
    let gap = "INTERVAL '45 seconds'";
    (
        format!(
            "SELECT session_window.start, session_window.end, {aggregates} FROM ev \
             GROUP BY session_window(ts, '45 seconds'), k"
        ),
        format!(
            "SELECT window_start AS start, window_end AS \"end\", {aggregates} FROM \
               (SELECT *, min(ts) OVER (PARTITION BY k, sid) AS window_start, \
                       max(ts) OVER (PARTITION BY k, sid) + {gap} AS window_end FROM \
                 (SELECT *, sum(CASE WHEN prev IS NULL OR ts >= prev + {gap} THEN 1 ELSE 0 END) \
                          OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM \
                   (SELECT *, lag(ts) OVER (PARTITION BY k ORDER BY ts) AS prev FROM RAW) AS a) AS b) AS c \
             GROUP BY window_start, window_end, k"
        ),
    )
}

/// Update output mode: the table always holds the latest value of every (window, key), open
/// windows included, so after each run it equals the batch answer over the on-time rows read
/// so far, and the Delta MERGE leaves one row per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_table_holds_the_latest_value_per_window_and_key() -> Result<(), TestError> {
    check_update_mode(
        "TUMBLE(ev, ts, INTERVAL '1 minute')",
        &TUMBLE_ORACLE_INPUT.replace("RAW", "(SELECT * FROM raw WHERE NOT late)"),
    )
    .await
}

/// The same for sliding windows, where one row updates several windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_with_hop_holds_the_latest_value_per_window_and_key() -> Result<(), TestError> {
    check_update_mode(
        "HOP(ev, ts, INTERVAL '1 minute', INTERVAL '3 minutes')",
        &HOP_ORACLE_INPUT.replace("RAW", "(SELECT * FROM raw WHERE NOT late)"),
    )
    .await
}

/// Sessions in update mode: a session that a later row widens or bridges with another is a
/// new row in the table, and the rows of the sessions it replaced are deleted in the same
/// commit, so the table holds exactly the current sessions after every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_with_sessions_holds_exactly_the_current_sessions() -> Result<(), TestError> {
    let (windowed, oracle) = sessions_and_oracle();
    check_update_mode_query(
        &windowed,
        &oracle.replace("RAW", "(SELECT * FROM raw WHERE NOT late)"),
    )
    .await
}

async fn check_update_mode(from: &str, oracle_input: &str) -> Result<(), TestError> {
    check_update_mode_query(&from_style(from), &from_style(oracle_input)).await
}

/// Runs `windowed` in update mode over two runs (the second drains) and compares the table
/// with `oracle` over the rows read so far after each run.
async fn check_update_mode_query(windowed: &str, oracle: &str) -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    write_events(&dir.path().join("staged"), 9, 11)?;
    pipeline(dir.path(), &data, windowed)?;
    let sql = std::fs::read_to_string(dir.path().join("p.sql"))?.replace(
        "CREATE TABLE windowed AS",
        "CREATE TABLE windowed WITH (output_mode = 'update') AS",
    );
    std::fs::write(dir.path().join("p.sql"), sql)?;
    let lake = dir.path().join("lake");
    let staged = dir.path().join("staged");
    let mut names: Vec<_> = std::fs::read_dir(&staged)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    for (part, files) in [&names[..5], &names[5..]].into_iter().enumerate() {
        for path in files {
            std::fs::rename(path, data.join(path.file_name().ok_or("name")?))?;
        }
        let drain = part == 1;
        run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], drain).await?;
        let ctx = lake_context(&lake).await?;
        let expected = sorted_rows(&ctx, oracle).await?;
        let actual = sorted_rows(&ctx, "SELECT * FROM windowed").await?;
        assert!(expected.len() > 10, "only {} windows", expected.len());
        assert_eq!(
            actual.len(),
            expected.len(),
            "run {part}: one row per window and key"
        );
        assert!(
            actual == expected,
            "run {part}: rows differ from the batch answer"
        );
    }
    Ok(())
}

/// State stays bounded: over a long generated stream (60 epochs, ~17 hours of event time), the
/// open (window, key) groups of a TUMBLE and a session table follow the watermark and do not grow
/// with the number of events read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_stays_bounded_over_a_long_stream() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE ev (event_type TEXT, user_id TEXT, product_id TEXT, amount DOUBLE,
             event_time TIMESTAMP NOT NULL,
             WATERMARK FOR event_time AS event_time - INTERVAL '2 minutes')
         WITH (connector = 'generator', events = 60000, max_events_per_trigger = 1000,
               late_ratio = 0.01, malformed_ratio = 0);
         CREATE TABLE per_product AS
         SELECT window_start, window_end, product_id, count(*) AS n, sum(amount) AS amount
         FROM TUMBLE(ev, event_time, INTERVAL '1 minute')
         GROUP BY window_start, window_end, product_id;
         CREATE TABLE sessions AS
         SELECT user_id, session_window.start AS s, session_window.end AS e, count(*) AS n
         FROM ev GROUP BY session_window(event_time, '5 minutes'), user_id;",
    )?;
    let run = run_pipeline_with(
        &dir.path().join("p.sql"),
        &dir.path().join("lake"),
        &[],
        false,
    )
    .await?;
    assert_eq!(run.epochs.len(), 60);
    for table in ["per_product", "sessions"] {
        let open: Vec<u64> = run
            .epochs
            .iter()
            .map(|e| e.open_windows.get(table).copied().unwrap_or(0))
            .collect();
        let first_half = open[5..30].iter().max().copied().unwrap_or(0);
        let second_half = open[30..].iter().max().copied().unwrap_or(0);
        assert!(first_half > 0, "{table}: no state at all");
        assert!(
            second_half as f64 <= first_half as f64 * 1.5,
            "{table}: state grows with the stream: {open:?}"
        );
        let rows: u64 = run.summary.rows_out.get(table).copied().unwrap_or(0);
        assert!(
            rows > 10 * second_half,
            "{table}: {rows} rows emitted, but up to {second_half} groups held open"
        );
    }
    Ok(())
}

/// A watermarked source with no data holds every window open, until it has been idle for its
/// `idle_timeout`; then the active source alone drives the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_source_stops_holding_the_watermark_back() -> Result<(), TestError> {
    let emitted = |idle: &'static str| async move {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        write_events(&data, 4, 3)?;
        std::fs::create_dir_all(dir.path().join("quiet"))?;
        std::fs::write(
            dir.path().join("p.sql"),
            format!(
                "CREATE SOURCE ev (k TEXT NOT NULL, x DOUBLE, ts TIMESTAMP NOT NULL,
                     WATERMARK FOR ts AS ts - INTERVAL '2 minutes')
                 WITH (connector = 'files', path = '{}', max_files_per_trigger = 1);
                 CREATE SOURCE quiet (k TEXT, ts TIMESTAMP NOT NULL,
                     WATERMARK FOR ts AS ts - INTERVAL '2 minutes')
                 WITH (connector = 'files', path = '{}'{idle});
                 CREATE TABLE per_minute AS
                 SELECT window_start, window_end, count(*) AS n
                 FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;",
                data.display(),
                dir.path().join("quiet").display()
            ),
        )?;
        let run = run_pipeline_with(
            &dir.path().join("p.sql"),
            &dir.path().join("lake"),
            &[],
            false,
        )
        .await?;
        Ok::<u64, TestError>(run.summary.rows_out.get("per_minute").copied().unwrap_or(0))
    };
    assert_eq!(
        emitted("").await?,
        0,
        "the quiet source holds the watermark"
    );
    assert!(
        emitted(", idle_timeout = '0 seconds'").await? > 10,
        "an idle source no longer holds it"
    );
    Ok(())
}

/// With `late_data = 'dead_letter'` on the source, every late row of a windowed table lands in
/// the source's dead-letter table, as JSON (the columns the window reads, with its window) with
/// the reason, and the rest equals the batch answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_dead_lettered_when_asked() -> Result<(), TestError> {
    check_late_dead_letters("TUMBLE(ev, ts, INTERVAL '1 minute')", TUMBLE_ORACLE_INPUT).await?;
    check_late_dead_letters(
        "HOP(ev, ts, INTERVAL '1 minute', INTERVAL '3 minutes')",
        HOP_ORACLE_INPUT,
    )
    .await
}

/// Runs `from` with late rows dead-lettered and checks the dead letters and the table.
async fn check_late_dead_letters(from: &str, oracle_input: &str) -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let written_late = write_events(&dir.path().join("staged"), 9, 5)?;
    pipeline(dir.path(), &data, &from_style(from))?;
    let sql = std::fs::read_to_string(dir.path().join("p.sql"))?.replace(
        "max_files_per_trigger = 1",
        "max_files_per_trigger = 1, late_data = 'dead_letter'",
    );
    std::fs::write(dir.path().join("p.sql"), sql)?;
    let lake = dir.path().join("lake");
    let late = run_split(dir.path(), &lake).await?;
    assert!(late >= written_late as u64);
    let ctx = lake_context(&lake).await?;
    // The event time is the row's own (before the watermark), not part of `raw`.
    let dead = sorted_rows(
        &ctx,
        "SELECT position, raw LIKE '{\"k\":%\"window_end\":%', \
                error = 'late: its window had ended at or before the watermark', \
                \"table\", event_time < watermark AND raw NOT LIKE '%__weir%' \
         FROM _dead_letter.ev",
    )
    .await?;
    assert_eq!(
        dead.len() as u64,
        late,
        "{from}: every late row is dead-lettered once"
    );
    assert!(
        dead.iter()
            .all(|r| r == "late at windowed|true|true|windowed|true"),
        "{from}: late rows keep their values and reason: {:?}",
        &dead[..3.min(dead.len())]
    );
    let expected = sorted_rows(
        &ctx,
        &from_style(&oracle_input.replace("RAW", "(SELECT * FROM raw WHERE NOT late)")),
    )
    .await?;
    assert!(
        sorted_rows(&ctx, "SELECT * FROM windowed").await? == expected,
        "{from}"
    );
    Ok(())
}

/// A checkpoint whose window state no longer fits the query (an aggregate changed, though the
/// table's columns did not) is refused with what changed and how to reset, never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_window_query_refuses_the_old_checkpoint() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_events(&data, 3, 9)?;
    let query = |aggregate: &str| {
        format!("SELECT window_start, window_end, k, {aggregate} AS n FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k")
    };
    pipeline(dir.path(), &data, &query("count(*)"))?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    pipeline(dir.path(), &data, &query("count(DISTINCT u)"))?;
    let err = match run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await {
        Ok(_) => return Err("the changed query reused the old window state".into()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("changed since this checkpoint"), "{err}");
    assert!(err.contains("delete the checkpoint folder"), "{err}");
    Ok(())
}

/// A window whose size, slide, gap or offset changed under an existing checkpoint keeps the
/// same state columns, so only the recorded definition can tell: the run is refused with what
/// changed, never fed state built for the old windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_window_size_slide_gap_or_offset_refuses_the_old_checkpoint(
) -> Result<(), TestError> {
    let changes = [
        (
            "TUMBLE(ev, ts, INTERVAL '1 minute')",
            "TUMBLE(ev, ts, INTERVAL '2 minutes')",
            "(TUMBLE on ts: size 1min; ",
            "(TUMBLE on ts: size 2min; ",
        ),
        (
            "HOP(ev, ts, INTERVAL '1 minute', INTERVAL '4 minutes')",
            "HOP(ev, ts, INTERVAL '2 minutes', INTERVAL '4 minutes')",
            "size 4min, slide 1min",
            "size 4min, slide 2min",
        ),
        (
            "SESSION(ev, ts, INTERVAL '30 seconds')",
            "SESSION(ev, ts, INTERVAL '45 seconds')",
            "gap 30s",
            "gap 45s",
        ),
        (
            "TUMBLE(ev, ts, INTERVAL '1 minute')",
            "TUMBLE(ev, ts, INTERVAL '1 minute', INTERVAL '15 seconds')",
            "size 1min;",
            "size 1min, offset 15s;",
        ),
    ];
    for (before, after, old, new) in changes {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        write_events(&data, 3, 9)?;
        pipeline(dir.path(), &data, &from_style(before))?;
        let lake = dir.path().join("lake");
        run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
        pipeline(dir.path(), &data, &from_style(after))?;
        let err = match run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await {
            Ok(_) => return Err(format!("{after} reused the state of {before}").into()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("changed since this checkpoint"), "{err}");
        assert!(
            err.contains(old) && err.contains(new),
            "{old} / {new}: {err}"
        );
        assert!(err.contains("delete the checkpoint folder"), "{err}");
    }
    Ok(())
}

/// Window offsets (Spark's `startTime`, TUMBLE's and HOP's fourth/fifth argument) shift window
/// starts, as days that begin at midnight UTC+8 (16:00 UTC) do; each spelling equals the batch
/// answer with the same shift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_offsets_shift_window_starts() -> Result<(), TestError> {
    let shifted = |size: &str| {
        format!(
            "(SELECT *, date_bin(INTERVAL '{size}', ts - INTERVAL '15 seconds') + INTERVAL '15 seconds' \
             AS window_start, date_bin(INTERVAL '{size}', ts - INTERVAL '15 seconds') \
             + INTERVAL '15 seconds' + INTERVAL '{size}' AS window_end FROM RAW) AS w"
        )
    };
    check(
        &from_style("TUMBLE(ev, ts, INTERVAL '1 minute', INTERVAL '15 seconds')"),
        &from_style(&shifted("1 minute")),
    )
    .await?;
    let aggregates = SELECT.trim_start_matches("window_start, window_end, ");
    check(
        &format!(
            "SELECT window.start, window.end, {aggregates} FROM ev \
             GROUP BY window(ts, '1 minute', '1 minute', '15 seconds'), k"
        ),
        &format!(
            "SELECT window_start AS start, window_end AS \"end\", {aggregates} \
             FROM {} GROUP BY window_start, window_end, k",
            shifted("1 minute")
        ),
    )
    .await
}

/// A deleted window-state file is an error naming the file and how to rebuild, never a restart
/// with empty state (which would silently drop the open windows' rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_window_state_file_is_an_error() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_events(&data, 3, 9)?;
    pipeline(
        dir.path(),
        &data,
        &from_style("TUMBLE(ev, ts, INTERVAL '1 minute')"),
    )?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    let state_dir = weir_tests::checkpoint_dir(&lake, &dir.path().join("p.sql"))
        .join("state")
        .join("windowed");
    let mut removed = 0;
    for entry in std::fs::read_dir(&state_dir)? {
        std::fs::remove_file(entry?.path())?;
        removed += 1;
    }
    assert!(removed > 0, "no state file in {}", state_dir.display());
    let err = match run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await {
        Ok(_) => return Err("the run restarted with empty window state".into()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("the state of `windowed` (window TUMBLE"),
        "{err}"
    );
    assert!(err.contains("as of epoch 3 is missing"), "{err}");
    assert!(err.contains("delete the checkpoint folder"), "{err}");
    Ok(())
}
