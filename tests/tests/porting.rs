//! Spark jobs port as written: camelCase fields, empty tables that readers can open, window
//! offsets. Each test is SQL and input events in, rows out.

use std::path::Path;

use weir_tests::{lake_context, run_pipeline_with, sorted_rows, TestError};

/// Writes `lines` as one JSON file per inner slice (one epoch each with
/// `max_files_per_trigger = 1`).
fn write_files(dir: &Path, files: &[&[&str]]) -> Result<(), TestError> {
    std::fs::create_dir_all(dir)?;
    for (i, lines) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("part-{i:03}.json")), lines.join("\n"))?;
    }
    Ok(())
}

/// camelCase fields: the declared spelling matches the JSON keys and names the Delta columns;
/// references work unquoted, quoted or in another case, in projections, filters, aliases,
/// TUMBLE and Spark's `window()`; the Kafka key and topic keep their case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camel_case_fields_keep_their_spelling_and_resolve_in_any_case() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_files(
        &data,
        &[
            &[
                r#"{"eventId":"e1","userId":"u1","eventTime":"2024-03-01T00:00:10Z","amount":5}"#,
                r#"{"eventId":"e2","userId":"u2","eventTime":"2024-03-01T00:00:20Z","amount":-1}"#,
            ],
            &[r#"{"eventId":"e3","userId":"u1","eventTime":"2024-03-01T00:01:10Z","amount":7}"#],
        ],
    )?;
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE SOURCE clicks (eventId TEXT NOT NULL, \"userId\" TEXT, eventTime TIMESTAMP NOT NULL,
                 amount DOUBLE, WATERMARK FOR eventtime AS eventTime - INTERVAL '1 minute')
             WITH (connector = 'files', path = '{}', max_files_per_trigger = 1);
             CREATE TABLE bronze AS SELECT * FROM clicks;
             CREATE TABLE silver AS SELECT eventid, USERID AS userKey, \"eventTime\", amount * 2 AS doubledAmount
                 FROM clicks WHERE Amount > 0;
             CREATE TABLE per_user AS SELECT userKey, sum(doubledAmount) AS totalAmount FROM silver GROUP BY userkey;
             CREATE TABLE tumbled AS SELECT window_start, userId, count(*) AS clickCount
                 FROM TUMBLE(clicks, \"eventTime\", INTERVAL '1 minute') GROUP BY window_start, window_end, userId;
             CREATE TABLE spark AS SELECT window.start, UserId, count(*) AS clickCount
                 FROM clicks GROUP BY window(EventTime, '1 minute'), userid;",
            data.display()
        ),
    )?;
    let lake = dir.path().join("lake");
    let run = run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], true).await?;
    assert_eq!(run.summary.dead_letters.values().sum::<u64>(), 0, "{run:?}");
    let ctx = lake_context(&lake).await?;
    let columns = |table: &str| {
        let ctx = ctx.clone();
        let table = table.to_string();
        async move {
            let df = ctx.table(table.as_str()).await?;
            Ok::<_, TestError>(
                df.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
    };
    assert_eq!(columns("bronze").await?, "eventId,userId,eventTime,amount");
    assert_eq!(
        columns("silver").await?,
        "eventId,userKey,eventTime,doubledAmount"
    );
    assert_eq!(columns("per_user").await?, "userKey,totalAmount");
    assert_eq!(columns("tumbled").await?, "window_start,userId,clickCount");
    assert_eq!(columns("spark").await?, "start,userId,clickCount");
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM silver").await?,
        [
            "e1|u1|2024-03-01T00:00:10Z|10.0",
            "e3|u1|2024-03-01T00:01:10Z|14.0"
        ]
    );
    let windows = [
        "2024-03-01T00:00:00Z|u1|1",
        "2024-03-01T00:00:00Z|u2|1",
        "2024-03-01T00:01:00Z|u1|1",
    ];
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM tumbled").await?, windows);
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM spark").await?, windows);
    Ok(())
}

/// Option values keep their case: a Kafka table's topic and its key column (`key = 'eventId'`
/// names the column `eventId`, found case-insensitively), and partition columns.
#[tokio::test]
async fn option_values_keep_their_case() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("p.sql");
    std::fs::write(
        &file,
        "CREATE SOURCE s (eventId TEXT, eventDate DATE, amount DOUBLE)
             WITH (connector = 'generator', events = 10);
         CREATE TABLE alerts WITH (connector = 'kafka', topic = 'Fraud.Detected',
             bootstrap.servers = '127.0.0.1:9092', key = 'EVENTID') AS SELECT * FROM s;
         CREATE TABLE by_day WITH (partition_by = 'eventdate', path = 'Gold/ByDay') AS
             SELECT eventId, eventDate FROM s;",
    )?;
    let files = weir_sql::load_pipeline_files_with_env(&file, &|_| None)?;
    let planned = weir_sql::plan_pipeline("p", &files, 1, &weir_cli::connectors()).await?;
    let sink = |name: &str| {
        planned
            .nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.sink.clone())
            .ok_or("no sink")
    };
    let kafka = sink("alerts")?;
    assert_eq!(kafka.connector, "kafka");
    assert_eq!(
        kafka.planned.describe(),
        "kafka topic 'Fraud.Detected' keyed by eventId"
    );
    let delta = sink("by_day")?;
    assert_eq!(
        delta.planned.describe(),
        "delta table 'Gold/ByDay' partitioned by eventDate"
    );
    Ok(())
}

/// Every table of a pipeline is a Delta table with its columns from the start, so readers can
/// query a table (or a dead-letter table) that has not received a row yet: 0 rows, not "table
/// not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_rows_yet_exist_with_their_columns() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_files(
        &data,
        &[&[r#"{"id":"a","amount":5,"ts":"2024-03-01T00:00:10Z"}"#]],
    )?;
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE SOURCE orders (id TEXT NOT NULL, amount DOUBLE, ts TIMESTAMP NOT NULL,
                 WATERMARK FOR ts AS ts - INTERVAL '1 minute')
             WITH (connector = 'files', path = '{}');
             CREATE TABLE refunds WITH (partition_by = 'id') AS SELECT id, amount FROM orders WHERE amount < 0;
             CREATE TABLE per_hour AS SELECT window_start, count(*) AS n
                 FROM TUMBLE(orders, ts, INTERVAL '1 hour') GROUP BY window_start, window_end;",
            data.display()
        ),
    )?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    let ctx = lake_context(&lake).await?;
    for (table, columns) in [
        ("refunds", "id,amount"),
        ("per_hour", "window_start,n"),
        ("_dead_letter.orders", ""),
    ] {
        let rows = sorted_rows(&ctx, &format!("SELECT count(*) FROM {table}")).await?;
        assert_eq!(rows, ["0"], "{table}");
        if !columns.is_empty() {
            let df = ctx.table(table).await?;
            let names: Vec<String> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names.join(","), columns, "{table}");
        }
    }
    Ok(())
}

/// A pipeline reads its own dead letters as a stream (`FROM _dead_letter.<source>`): records
/// that failed to decode and, with `late_data = 'dead_letter'`, rows its windowed tables found
/// late in the same epoch, so errors can be counted or routed like any other stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_a_stream_the_pipeline_can_read() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_files(
        &data,
        &[
            &[
                r#"{"id":"a","ts":"2024-03-01T00:00:10Z"}"#,
                r#"{"id":"b","ts":"2024-03-01T00:05:10Z"}"#,
                r#"{"id":"c","ts":"#,
            ],
            &[
                r#"{"id":"d","ts":"2024-03-01T00:00:20Z"}"#,
                r#"{"ts":"2024-03-01T00:06:00Z"}"#,
                r#"not json"#,
            ],
        ],
    )?;
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE SOURCE orders (id TEXT NOT NULL, ts TIMESTAMP NOT NULL,
                 WATERMARK FOR ts AS ts - INTERVAL '1 minute')
             WITH (connector = 'files', path = '{}', max_files_per_trigger = 1,
                   late_data = 'dead_letter');
             CREATE TABLE per_minute AS SELECT window_start, count(*) AS n
                 FROM TUMBLE(orders, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;
             CREATE TABLE errors AS SELECT source, epoch, error, raw, \"table\" FROM _dead_letter.orders;
             CREATE VIEW late AS SELECT * FROM _dead_letter.orders WHERE error LIKE 'late:%';
             CREATE TABLE late_per_epoch AS SELECT epoch, count(*) AS n FROM late GROUP BY epoch;",
            data.display()
        ),
    )?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    let ctx = lake_context(&lake).await?;
    let stored = sorted_rows(
        &ctx,
        "SELECT source, epoch, error, raw, \"table\" FROM _dead_letter.orders",
    )
    .await?;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(sorted_rows(&ctx, "SELECT * FROM errors").await?, stored);
    // Epoch 2: `d` (00:00:20) is late once the first epoch moved the watermark to 00:04:10.
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM late_per_epoch").await?,
        ["2|1"]
    );
    Ok(())
}

/// Nested JSON: `ARRAY<STRUCT<...>>` (Spark), `ROW<...>` (Flink) and `MAP<TEXT, ...>` columns
/// decode from JSON arrays and objects, SQL reaches into them (`items[1].product_id`,
/// `attrs['channel']`, `customer.tier`, `unnest(items)`), and the Delta tables keep the nested
/// types. A JSON array sent to a TEXT column is a dead letter saying what to declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_types_decode_and_sql_reaches_into_them() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    write_files(
        &data,
        &[&[
            r#"{"orderId":"o1","items":[{"productId":"p1","quantity":2},{"productId":"p2","quantity":1}],"attrs":{"channel":"web"},"customer":{"id":"c1","tier":"gold"},"note":"x"}"#,
            r#"{"orderId":"o2","items":[],"attrs":{},"customer":{"id":"c2"},"note":"y"}"#,
            r#"{"orderId":"o3","items":"not an array","note":"z"}"#,
            r#"{"orderId":"o4","items":[],"note":["a","b"]}"#,
        ]],
    )?;
    std::fs::write(
        dir.path().join("p.sql"),
        format!(
            "CREATE SOURCE orders (orderId TEXT NOT NULL,
                 items ARRAY<STRUCT<productId: STRING, quantity: INT>>,
                 attrs MAP<TEXT, TEXT>, customer ROW<id TEXT, tier TEXT>, note TEXT)
             WITH (connector = 'files', path = '{}');
             CREATE TABLE bronze AS SELECT * FROM orders;
             CREATE TABLE firsts AS SELECT orderid, items[1].productid AS first_product,
                 cardinality(items) AS n, attrs['channel'] AS channel, customer.tier
                 FROM orders;
             CREATE TABLE lines AS SELECT orderId, item.productId, item.quantity
                 FROM (SELECT orderId, unnest(items) AS item FROM orders) AS x;",
            data.display()
        ),
    )?;
    let lake = dir.path().join("lake");
    run_pipeline_with(&dir.path().join("p.sql"), &lake, &[], false).await?;
    let ctx = lake_context(&lake).await?;
    assert_eq!(
        sorted_rows(&ctx, "SELECT \"orderId\", items, attrs, customer FROM bronze").await?,
        [
            "o1|[{productId: p1, quantity: 2}, {productId: p2, quantity: 1}]|{channel: web}|{id: c1, tier: gold}",
            "o2|[]|{}|{id: c2, tier: }",
        ]
    );
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM firsts").await?,
        ["o1|p1|2|web|gold", "o2||0||"]
    );
    let df = ctx.table("lines").await?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["orderId", "productId", "quantity"]);
    assert_eq!(
        sorted_rows(&ctx, "SELECT * FROM lines").await?,
        ["o1|p1|2", "o1|p2|1"]
    );
    let errors = sorted_rows(&ctx, "SELECT error FROM _dead_letter.orders").await?;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.starts_with(
            "field `note` is a JSON array, but the column is declared TEXT; declare it as ARRAY<...>"
        ) && e.ends_with(r#"["a","b"]"#)),
        "{errors:?}"
    );
    Ok(())
}
