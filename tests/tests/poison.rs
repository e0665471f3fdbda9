//! One bad record never stops a pipeline for good, never moves its watermark past every later
//! row, and never vanishes: it is a dead letter with its reason, and the pipeline goes on.

use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

/// Event times that are NULL, outside what windows can compute (year 0001, 9999, ±i64 ms,
/// 1e20), or far in the future (year 2200) are dead letters; the windowed tables (TUMBLE and
/// SESSION) hold exactly the good rows, over two runs, and the run never fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_event_times_are_dead_letters_and_the_pipeline_goes_on() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let good =
        |minute: u32, k: &str| format!(r#"{{"k":"{k}","ts":"2024-03-01T00:{minute:02}:10Z"}}"#);
    let first = [
        good(0, "a"),
        r#"{"k":"a","ts":"0001-01-01T00:00:00Z"}"#.to_string(),
        good(1, "b"),
        r#"{"k":"a","ts":"9999-12-31T23:59:59Z"}"#.to_string(),
        r#"{"k":"a","ts":null}"#.to_string(),
        r#"{"k":"a"}"#.to_string(),
    ];
    let second = [
        good(3, "a"),
        r#"{"k":"b","ts":9223372036854775807}"#.to_string(),
        r#"{"k":"b","ts":-9223372036854775808}"#.to_string(),
        r#"{"k":"b","ts":1e20}"#.to_string(),
        r#"{"k":"b","ts":"2200-01-01T00:00:00Z"}"#.to_string(),
        good(4, "b"),
    ];
    std::fs::write(data.join("a.json"), first.join("\n"))?;
    let sql = format!(
        "CREATE SOURCE ev (k TEXT NOT NULL, ts TIMESTAMP,
             WATERMARK FOR ts AS ts - INTERVAL '1 minute')
         WITH (connector = 'files', path = '{}');
         CREATE TABLE per_minute AS SELECT window_start, k, count(*) AS n
             FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k;
         CREATE TABLE sessions AS SELECT session_window.start AS s, k, count(*) AS n
             FROM ev GROUP BY session_window(ts, '30 seconds'), k;",
        data.display()
    );
    std::fs::write(dir.path().join("p.sql"), sql)?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    std::fs::write(data.join("b.json"), second.join("\n"))?;
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], true).await?;
    let ctx = lake_context(&lake).await?;
    let reasons = sorted_rows(&ctx, "SELECT error FROM _dead_letter.ev").await?;
    assert_eq!(reasons.len(), 8, "{reasons:#?}");
    assert_eq!(
        reasons.iter().filter(|r| r.contains("is null")).count(),
        2,
        "{reasons:#?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("outside the range"))
            .count(),
        4,
        "{reasons:#?}"
    );
    // 1e20 is no whole number of milliseconds a timestamp holds: refused while decoding.
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.starts_with("field `ts`: 1e+20"))
            .count(),
        1,
        "{reasons:#?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("max_event_time_ahead"))
            .count(),
        1,
        "{reasons:#?}"
    );
    let windows = [
        "2024-03-01T00:00:00Z|a|1",
        "2024-03-01T00:01:00Z|b|1",
        "2024-03-01T00:03:00Z|a|1",
        "2024-03-01T00:04:00Z|b|1",
    ];
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM per_minute").await?,
        windows
    );
    let sessions = [
        "2024-03-01T00:00:10Z|a|1",
        "2024-03-01T00:01:10Z|b|1",
        "2024-03-01T00:03:10Z|a|1",
        "2024-03-01T00:04:10Z|b|1",
    ];
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM sessions").await?, sessions);
    Ok(())
}

/// Per-row runtime errors in a table's SQL (a cast of 'a' to INT, a division by zero, a bad
/// regular expression) dead-letter the failing rows with the table and the error; the other
/// rows are written, downstream tables go on, and the run (and a second one) succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_query_fails_on_are_dead_letters() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("a.json"),
        [
            r#"{"id":"o1","qty":"2","pattern":"o"}"#,
            r#"{"id":"o2","qty":"a","pattern":"o"}"#,
            r#"{"id":"o3","qty":"0","pattern":"o"}"#,
            r#"{"id":"o4","qty":"5","pattern":"("}"#,
            r#"{"id":"o5","qty":"4","pattern":"o"}"#,
        ]
        .join("\n"),
    )?;
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE SOURCE orders (id TEXT NOT NULL, qty TEXT, pattern TEXT)
             WITH (connector = 'files', path = '{}');
             CREATE VIEW parsed AS SELECT id, CAST(qty AS INT) AS qty, pattern FROM orders;
             CREATE TABLE per_unit AS SELECT id, 100 / qty AS per_unit FROM parsed;
             CREATE TABLE matched AS SELECT id FROM orders WHERE regexp_like(id, pattern);",
            data.display()
        ),
    )?;
    let lake = dir.path().join("lake");
    let run = run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    assert_eq!(run.summary.dead_letters.get("orders"), Some(&3), "{run:?}");
    let ctx = lake_context(&lake).await?;
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM per_unit").await?,
        ["o1|50", "o4|20", "o5|25"]
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM matched").await?,
        ["o1", "o2", "o3", "o5"]
    );
    let dead = sorted_rows(
        &ctx,
        "SELECT \"table\", raw LIKE '%\"id\":\"' || CASE WHEN \"table\" = 'parsed' THEN 'o2' \
         WHEN \"table\" = 'per_unit' THEN 'o3' ELSE 'o4' END || '\"%' FROM _dead_letter.orders",
    )
    .await?;
    assert_eq!(dead, ["matched|true", "parsed|true", "per_unit|true"]);
    // A second run replays nothing and fails on nothing.
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    Ok(())
}

/// Values that do not fit their column exactly are dead letters by default (`"12"` or `1.5`
/// into an INT, `1e20` into a BIGINT, `01`, a trailing comma, a duplicate key, `"NaN"` into a
/// DOUBLE); `json.lenient = true` keeps arrow-json's coercions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_exactly_are_dead_letters_unless_lenient() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("a.json"),
        [
            r#"{"id":"good","n":1,"big":2,"x":1.5}"#,
            r#"{"id":"string","n":"12"}"#,
            r#"{"id":"fraction","n":1.5}"#,
            r#"{"id":"huge","big":1e20}"#,
            r#"{"id":"zero","n":01}"#,
            r#"{"id":"comma","n":3,}"#,
            r#"{"id":"twice","n":1,"n":2}"#,
            r#"{"id":"nan","x":"NaN"}"#,
            r#"{"id":"whole","n":7.0}"#,
        ]
        .join("\n"),
    )?;
    let sql = |lenient: &str| {
        format!(
            "CREATE SOURCE ev (id TEXT NOT NULL, n INT, big BIGINT, x DOUBLE)
             WITH (connector = 'files', path = '{}'{lenient});
             CREATE TABLE t AS SELECT id FROM ev;",
            data.display()
        )
    };
    let strict_dir = dir.path().join("strict");
    std::fs::create_dir_all(&strict_dir)?;
    std::fs::write(strict_dir.join("p.sql"), sql(""))?;
    run_pipeline_with(
        &strict_dir.join("p.sql"),
        &strict_dir.join("lake"),
        &[],
        false,
    )
    .await?;
    let ctx = lake_context(&strict_dir.join("lake")).await?;
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM t").await?,
        ["good", "whole"]
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT count(*) FROM _dead_letter.ev").await?,
        ["7"]
    );
    let lenient_dir = dir.path().join("lenient");
    std::fs::create_dir_all(&lenient_dir)?;
    std::fs::write(lenient_dir.join("p.sql"), sql(", json.lenient = true"))?;
    run_pipeline_with(
        &lenient_dir.join("p.sql"),
        &lenient_dir.join("lake"),
        &[],
        false,
    )
    .await?;
    let ctx = lake_context(&lenient_dir.join("lake")).await?;
    let kept = sorted_rows(&ctx, "SELECT * FROM t").await?;
    assert!(
        kept.len() > 2 && kept.contains(&"string".to_string()),
        "{kept:?}"
    );
    Ok(())
}

/// A record that is not valid UTF-8 is a dead letter whose `raw` keeps its exact bytes
/// (escaped, as its error says), not U+FFFD replacements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_keeps_its_exact_bytes() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let bad: &[u8] = b"{\"id\":\"a\xff\xfe\\tb\"}";
    let mut file = b"{\"id\":\"good\"}\n".to_vec();
    file.extend_from_slice(bad);
    std::fs::write(data.join("a.json"), file)?;
    let sql = format!(
        "CREATE SOURCE ev (id TEXT NOT NULL) WITH (connector = 'files', path = '{}');
         CREATE TABLE t AS SELECT id FROM ev;",
        data.display()
    );
    std::fs::write(dir.path().join("p.sql"), sql)?;
    run_pipeline_with(
        &dir.path().join("p.sql"),
        &dir.path().join("lake"),
        &[],
        false,
    )
    .await?;
    let ctx = lake_context(&dir.path().join("lake")).await?;
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM t").await?, ["good"]);
    let dead = sorted_rows(&ctx, "SELECT raw, error FROM _dead_letter.ev").await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (raw, error) = dead[0].split_once('|').ok_or("two columns")?;
    assert_eq!(raw, r#"{"id":"a\xFF\xFE\\tb"}"#);
    assert!(error.contains("not valid UTF-8"), "{error}");
    assert_eq!(unescape(raw)?, bad);
    Ok(())
}

/// Undoes the `raw` escaping of a record that is not UTF-8 (`\xNN` and `\\`).
fn unescape(text: &str) -> Result<Vec<u8>, TestError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4])?;
                out.push(u8::from_str_radix(hex, 16)?);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}
