//! Pipeline mistakes are reported at file:line:col with a hint. Each case is SQL in, and the
//! expected position (the first occurrence of a marker text) and message out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::Path;

use weir_sql::{load_pipeline_files_with_env, plan_pipeline, SqlErrors};

const SOURCE: &str = "CREATE SOURCE tx (\n    id TEXT NOT NULL,\n    amount DOUBLE,\n    ts TIMESTAMP\n) WITH (connector = 'generator', events = 10);\n";

/// Plans `sql` from a file and returns the errors (the test fails if planning succeeds).
async fn errors_of(sql: &str) -> (SqlErrors, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.sql");
    std::fs::write(&file, sql).unwrap();
    let files = load_pipeline_files_with_env(&file, &|_| None).unwrap();
    match plan_pipeline("p", &files, 1, &weir_cli::connectors()).await {
        Ok(_) => panic!("expected an error for:\n{sql}"),
        Err(e) => (e, file, dir),
    }
}

/// 1-based line and column of the first `marker` at or after line `from_line`.
fn position_of(sql: &str, marker: &str, from_line: usize) -> (u64, u64) {
    for (i, line) in sql.lines().enumerate().skip(from_line - 1) {
        if let Some(col) = line.find(marker) {
            return (i as u64 + 1, line[..col].chars().count() as u64 + 1);
        }
    }
    panic!("marker {marker:?} not in the SQL");
}

/// Asserts one error at `marker` whose text contains every `expected` fragment.
async fn assert_error(sql: &str, marker: &str, from_line: usize, expected: &[&str]) {
    let (errors, file, _dir) = errors_of(sql).await;
    let e = &errors.0[0];
    let text = errors.to_string();
    assert_eq!(
        (e.location.line, e.location.column),
        position_of(sql, marker, from_line),
        "{text}"
    );
    assert_eq!(e.location.file, file.as_path());
    let prefix = format!(
        "{}:{}:{}: error:",
        file.display(),
        e.location.line,
        e.location.column
    );
    assert!(text.starts_with(&prefix), "{text}");
    for fragment in expected {
        assert!(text.contains(fragment), "missing {fragment:?} in:\n{text}");
    }
    assert!(e.hint.is_some(), "no hint in:\n{text}");
}

#[tokio::test]
async fn unknown_column_points_at_the_column() {
    let sql = format!("{SOURCE}CREATE TABLE t AS\nSELECT id, amout FROM tx;\n");
    assert_error(&sql, "amout", 6, &["amout", "amount"]).await;
}

#[tokio::test]
async fn misspelt_option_points_at_the_key_and_suggests() {
    let sql = "CREATE SOURCE tx (id TEXT)\nWITH (connector = 'generator', evnts = 10);\n";
    assert_error(sql, "evnts", 1, &["`evnts`", "Did you mean `events`?"]).await;
}

#[tokio::test]
async fn bad_option_value_points_at_the_value() {
    let sql = "CREATE SOURCE tx (id TEXT)\nWITH (connector = 'generator', events = 'lots');\n";
    assert_error(sql, "'lots'", 1, &["events", "whole number"]).await;
}

#[tokio::test]
async fn unknown_table_option_is_rejected() {
    let sql = format!("{SOURCE}CREATE TABLE t WITH (partition = 'id') AS SELECT * FROM tx;\n");
    assert_error(&sql, "partition ", 6, &["`partition`", "partition_by"]).await;
}

#[tokio::test]
async fn unknown_connector_lists_the_known_ones() {
    let sql = "CREATE SOURCE tx (id TEXT)\nWITH (connector = 'kinesis');\n";
    assert_error(
        sql,
        "'kinesis'",
        1,
        &["unknown connector 'kinesis'", "files, generator, kafka"],
    )
    .await;
}

#[tokio::test]
async fn cycle_between_views_is_an_error() {
    let sql =
        format!("{SOURCE}CREATE VIEW a AS SELECT * FROM b;\nCREATE VIEW b AS SELECT * FROM a;\n");
    assert_error(&sql, "b;", 6, &["cycle between streams: a reads b reads a"]).await;
}

#[tokio::test]
async fn unknown_table_suggests_the_closest() {
    let sql = format!("{SOURCE}CREATE TABLE t AS SELECT * FROM txx;\n");
    assert_error(
        &sql,
        "txx",
        6,
        &["unknown source, table or view `txx`", "did you mean `tx`?"],
    )
    .await;
}

#[tokio::test]
async fn partition_column_must_exist() {
    let sql = format!("{SOURCE}CREATE TABLE t WITH (partition_by = 'day') AS SELECT id FROM tx;\n");
    assert_error(&sql, "'day'", 6, &["partition column `day`"]).await;
}

#[tokio::test]
async fn unsupported_column_type_lists_supported_ones() {
    let sql = "CREATE SOURCE tx (id TEXT, blob BYTEA) WITH (connector = 'generator');\n";
    assert_error(sql, "blob", 1, &["BYTEA", "TIMESTAMP"]).await;
}

#[tokio::test]
async fn syntax_error_has_a_position() {
    let sql = format!("{SOURCE}CREATE TABLE t AS\nSELECT id FROM tx WHERE;\n");
    let (errors, _file, _dir) = errors_of(&sql).await;
    assert_eq!(errors.0[0].location.line, 7, "{errors}");
}

#[test]
fn positions_survive_environment_substitution() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sql");
    std::fs::write(
        &file,
        "CREATE SOURCE tx (id TEXT)\nWITH (connector = 'generator', events = ${N});\n",
    )
    .unwrap();
    let err = load_pipeline_files_with_env(Path::new(&file), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p.sql:2:41: error: environment variable `N` is not set"),
        "{err}"
    );
}

const WATERMARKED: &str = "CREATE SOURCE tx (\n    k TEXT,\n    ts TIMESTAMP,\n    WATERMARK FOR ts AS ts - INTERVAL '1 minute'\n) WITH (connector = 'generator', events = 10);\n";

#[tokio::test]
async fn window_needs_a_watermark() {
    let sql = format!("{SOURCE}CREATE TABLE per_min AS SELECT window_start, window_end, count(*)\nFROM TUMBLE(tx, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;\n");
    assert_error(
        &sql,
        "per_min",
        6,
        &["no source declares a watermark", "WATERMARK FOR"],
    )
    .await;
}

#[tokio::test]
async fn window_must_be_grouped_by() {
    let sql = format!("{WATERMARKED}CREATE TABLE t AS\nSELECT k, count(*) FROM TUMBLE(tx, ts, INTERVAL '1 minute') GROUP BY k;\n");
    assert_error(&sql, "SELECT k", 6, &["GROUP BY must include `window_end`"]).await;
}

#[tokio::test]
async fn window_function_arguments_are_checked() {
    let sql = format!("{WATERMARKED}CREATE TABLE t AS\nSELECT count(*) FROM HOP(tx, ts, INTERVAL '1 minute') GROUP BY window_end;\n");
    assert_error(&sql, "HOP", 6, &["HOP takes 4 or 5 arguments"]).await;
}

#[tokio::test]
async fn update_output_mode_needs_the_window_and_keys_in_the_output() {
    let sql = format!("{WATERMARKED}CREATE TABLE t WITH (output_mode = 'update') AS\nSELECT window_end, count(*) FROM TUMBLE(tx, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;\n");
    assert_error(&sql, "'update'", 6, &["MERGE", "missing: window_start"]).await;
}

#[tokio::test]
async fn update_output_mode_needs_a_windowed_aggregate() {
    let sql = format!(
        "{WATERMARKED}CREATE TABLE t WITH (output_mode = 'update') AS\nSELECT k FROM tx;\n"
    );
    assert_error(&sql, "'update'", 6, &["windowed aggregate", "append-only"]).await;
}

const TWO_STREAMS: &str = "CREATE SOURCE orders (id TEXT, user_id TEXT, ts TIMESTAMP) WITH (connector = 'generator', events = 10);\nCREATE SOURCE payments (order_id TEXT, amount DOUBLE) WITH (connector = 'generator', events = 10);\n";

/// A join of two streams without a time bound would keep every row forever: refused, with
/// what to add.
#[tokio::test]
async fn a_join_of_two_streams_is_refused() {
    let sql = format!("{TWO_STREAMS}CREATE TABLE paid AS\nSELECT o.id, p.amount FROM orders AS o\nJOIN payments AS p ON p.order_id = o.id;\n");
    assert_error(
        &sql,
        "payments AS p",
        3,
        &[
            "`paid` joins `orders` with `payments`",
            "without a bound on how far apart their event times may be",
            "WATERMARK FOR ts",
        ],
    )
    .await;
}

/// Through views, a comma join and a subquery: still two streams.
#[tokio::test]
async fn joins_of_two_streams_through_views_and_subqueries_are_refused() {
    let sql = format!("{TWO_STREAMS}CREATE VIEW big AS SELECT * FROM payments WHERE amount > 10;\nCREATE TABLE t AS SELECT o.id FROM orders AS o, big AS b WHERE b.order_id = o.id;\n");
    assert_error(&sql, "big AS b", 3, &["`t` joins `orders` with `payments`"]).await;
    let sql = format!("{TWO_STREAMS}CREATE TABLE t AS\nSELECT id FROM orders WHERE id IN (SELECT order_id FROM payments);\n");
    assert_error(
        &sql,
        "id IN",
        3,
        &["`t` a subquery combines `orders` with `payments`"],
    )
    .await;
}

/// Views of the same source joined row for row stay allowed, and so does a join with constants.
#[tokio::test]
async fn a_join_of_views_of_one_source_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sql");
    std::fs::write(
        &file,
        format!(
            "{TWO_STREAMS}CREATE VIEW a AS SELECT id, ts FROM orders WHERE id > 'k';\n\
             CREATE VIEW b AS SELECT id, user_id FROM orders;\n\
             CREATE TABLE t AS SELECT a.id, b.user_id FROM a JOIN b ON a.id = b.id;\n\
             CREATE TABLE c AS SELECT o.id, n.x FROM orders AS o CROSS JOIN (VALUES (1), (2)) AS n(x);\n"
        ),
    )
    .unwrap();
    let files = load_pipeline_files_with_env(&file, &|_| None).unwrap();
    if let Err(e) = plan_pipeline("p", &files, 1, &weir_cli::connectors()).await {
        panic!("{e}");
    }
}

/// Rows that pass through another aggregate (here a subquery's GROUP BY) before a window
/// aggregate would be aggregated per epoch: refused.
#[tokio::test]
async fn an_aggregate_below_a_window_is_refused() {
    let sql = format!("{WATERMARKED}CREATE TABLE t AS\nSELECT window_start, window_end, count(*) FROM TUMBLE(tx, ts, INTERVAL '1 minute')\nWHERE k IN (SELECT k FROM tx GROUP BY k HAVING count(*) > 1) GROUP BY window_start, window_end;\n");
    assert_error(
        &sql,
        "SELECT window_start",
        6,
        &["aggregates its rows before the window", "cut into epochs"],
    )
    .await;
}

/// Table paths stay inside the lake, never make the lake itself a table, never write into
/// Weir's own folders, and never overlap another table's.
#[tokio::test]
async fn table_paths_that_write_where_they_should_not_are_refused() {
    for (path, expected) in [
        ("../../etc", "leaves the lake"),
        ("", "the lake itself"),
        (".", "the lake itself"),
        ("/tmp/elsewhere", "outside the lake"),
        ("_dead_letter/tx", "Weir keeps for itself"),
    ] {
        let sql = format!("{SOURCE}CREATE TABLE t WITH (path = '{path}') AS SELECT id FROM tx;\n");
        assert_error(&sql, &format!("'{path}'"), 6, &[expected]).await;
    }
    let sql = format!("{SOURCE}CREATE TABLE _dead_letter.tx AS SELECT id FROM tx;\n");
    let (errors, _file, _dir) = errors_of(&sql).await;
    assert!(errors.to_string().contains("_dead_letter"), "{errors}");
    let sql = format!(
        "{SOURCE}CREATE TABLE a WITH (path = 'gold/x') AS SELECT id FROM tx;\nCREATE TABLE b WITH (path = 'gold/x/') AS SELECT id FROM tx;\n"
    );
    assert_error(&sql, "b WITH", 7, &["overlaps `a`"]).await;
}

/// An absolute path outside the lake is allowed when the table says so.
#[tokio::test]
async fn an_absolute_path_is_allowed_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sql");
    std::fs::write(
        &file,
        format!("{SOURCE}CREATE TABLE t WITH (path = '/tmp/weir-elsewhere', allow_outside_lake = true) AS SELECT id FROM tx;\n"),
    )
    .unwrap();
    let files = load_pipeline_files_with_env(&file, &|_| None).unwrap();
    if let Err(e) = plan_pipeline("p", &files, 1, &weir_cli::connectors()).await {
        panic!("{e}");
    }
}

/// A generated 2,000-term OR, or a HOP putting each row in 86,400 windows, is a clear error in
/// well under a second instead of a stack overflow or minutes of planning.
#[tokio::test]
async fn huge_expressions_and_window_counts_are_refused_quickly() {
    let started = std::time::Instant::now();
    let terms: Vec<String> = (0..10_000).map(|i| format!("amount = {i}")).collect();
    let sql = format!(
        "{SOURCE}CREATE TABLE t AS\nSELECT id FROM tx WHERE {};\n",
        terms.join(" OR ")
    );
    assert_error(&sql, "SELECT id", 6, &["19999 operators", "IN (...)"]).await;
    let sql = format!("{WATERMARKED}CREATE TABLE t AS\nSELECT window_start, count(*) FROM HOP(tx, ts, INTERVAL '1 second', INTERVAL '1 day') GROUP BY window_start, window_end;\n");
    assert_error(&sql, "HOP", 6, &["86400 windows", "at most 1000"]).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A misspelt time column inside a window function is reported where it is written, not in
/// the file's first line.
#[tokio::test]
async fn a_misspelt_window_time_column_points_at_it() {
    let sql = "-- gold tables\nCREATE SOURCE events (amount DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 minute')\nWITH (connector = 'generator', events = 10);\nCREATE TABLE t AS\nSELECT window_start, count(*) AS n\nFROM TUMBLE(events, tss, INTERVAL '1 minute')\nGROUP BY window_start, window_end;\n";
    assert_error(sql, "tss", 6, &["column 'tss' not found", "events.ts"]).await;
}

#[tokio::test]
async fn dead_letter_topic_on_a_source_that_is_not_kafka_points_at_the_option() {
    let sql = "CREATE SOURCE tx (id TEXT NOT NULL)\nWITH (connector = 'generator', events = 10,\n      dead_letter_topic = 'dlq');\nCREATE TABLE t AS SELECT id FROM tx;\n";
    assert_error(
        sql,
        "dead_letter_topic",
        1,
        &[
            "`dead_letter_topic` needs a Kafka source",
            "_dead_letter.tx",
        ],
    )
    .await;
}
