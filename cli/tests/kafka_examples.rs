//! The Kafka examples that end in PostgreSQL, Parquet and Kafka (`examples/retail`,
//! `examples/microservices`, `examples/event-processor`), run as their README sections say
//! against the real broker (`scripts/test.sh`) and a real PostgreSQL server, each table
//! checked against the same question asked as a batch query (DataFusion) over the messages the
//! generator sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;

use common::postgres::PgServer;
use common::{assert_success, create_topic, kafka_broker, unique_topic, weir};
use datafusion::prelude::{JsonReadOptions, SessionContext};

/// Events produced per example.
const EVENTS: u64 = 20_000;
const SEED: u64 = 7;

/// Creates the topics of generator `kind` under a new prefix and fills them with
/// `weir produce`; returns the prefix.
fn produce(servers: &str, kind: &str) -> String {
    let prefix = format!("{}.", unique_topic(kind));
    let topics = weir_cli::example_events::KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap()
        .1;
    for topic in topics {
        create_topic(servers, &format!("{prefix}{topic}"), 2);
    }
    let out = weir()
        .args(["produce", "--from-generator", kind, "--bootstrap", servers])
        .args(["--events", &EVENTS.to_string(), "--seed", &SEED.to_string()])
        .args(["--topic-prefix", &prefix])
        .output()
        .unwrap();
    assert_success(&out, "weir produce");
    prefix
}

/// A batch session over the generator's messages: one table per topic (`.` as `_`), read
/// from newline-delimited JSON (the malformed messages left out: they are dead letters).
struct Batch {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
}

impl Batch {
    fn new(dir: &Path, kind: &str) -> Batch {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ctx = runtime.block_on(batch_oracle(dir, kind));
        Batch { runtime, ctx }
    }

    /// The rows of a batch `sql`, each row's columns joined by `|`, sorted.
    fn rows(&self, sql: &str) -> Vec<String> {
        self.runtime.block_on(batch_rows(&self.ctx, sql))
    }

    /// Registers a folder of Parquet files as `name`, as a reader of the folder sees it
    /// (Hive partition values, as text, from `partitions`).
    fn register_parquet(&self, name: &str, folder: &Path, partitions: &[&str]) {
        let options = datafusion::prelude::ParquetReadOptions::default().table_partition_cols(
            partitions
                .iter()
                .map(|p| (p.to_string(), arrow::datatypes::DataType::Utf8))
                .collect(),
        );
        self.runtime
            .block_on(
                self.ctx
                    .register_parquet(name, folder.to_str().unwrap(), options),
            )
            .unwrap();
    }
}

async fn batch_oracle(dir: &Path, kind: &str) -> SessionContext {
    let events = weir_cli::example_events::generate(kind, EVENTS, SEED).unwrap();
    let ctx = SessionContext::new();
    let topics: std::collections::BTreeSet<&str> = events.iter().map(|e| e.topic).collect();
    for topic in topics {
        let lines: Vec<&str> = events
            .iter()
            .filter(|e| e.topic == topic)
            .map(|e| e.payload.as_str())
            .filter(|p| serde_json::from_str::<serde_json::Value>(p).is_ok())
            .collect();
        let file = dir.join(format!("{topic}.json"));
        std::fs::write(&file, lines.join("\n")).unwrap();
        ctx.register_json(
            topic.replace('.', "_"),
            file.to_str().unwrap(),
            JsonReadOptions::default().file_extension(".json"),
        )
        .await
        .unwrap();
    }
    ctx
}

async fn batch_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                    .unwrap()
            })
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

/// Asserts that `actual` and `expected` (sorted rows) are equal; on failure shows the counts
/// and the first differences rather than every row.
fn assert_same_rows(what: &str, actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|r| !actual.contains(r))
        .take(5)
        .collect();
    let extra: Vec<&String> = actual
        .iter()
        .filter(|r| !expected.contains(r))
        .take(5)
        .collect();
    panic!(
        "{what}: {} rows, {} expected; first missing {missing:?}; first unexpected {extra:?}",
        actual.len(),
        expected.len()
    );
}

/// psql's rows of `sql` (fields joined by `|`), sorted.
fn pg_rows(pg: &PgServer, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = pg
        .psql(sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// `weir run EXAMPLE --once --drain` with the topics under `prefix` and PostgreSQL at `pg`.
fn run_example(example: &str, dir: &Path, servers: &str, prefix: &str, pg: Option<&PgServer>) {
    let mut cmd = weir();
    cmd.arg("run")
        .arg(common::repo().join("examples").join(example))
        .args(["--once", "--drain", "--progress", "quiet", "--lake"])
        .arg(dir.join("lake"))
        .env("KAFKA_BOOTSTRAP", servers)
        .env("TOPIC_PREFIX", prefix);
    if let Some(pg) = pg {
        cmd.env("PG_URL", &pg.url);
    }
    assert_success(
        &cmd.output().unwrap(),
        &format!("weir run examples/{example}"),
    );
}

#[test]
fn retail_postgres_tables_equal_the_batch_answer() {
    let Some(servers) = kafka_broker("retail_postgres_tables_equal_the_batch_answer") else {
        return;
    };
    let Some(pg) = PgServer::start("retail_postgres_tables_equal_the_batch_answer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = produce(&servers, "retail");
    run_example("retail", dir.path(), &servers, &prefix, Some(&pg));
    let batch = Batch::new(dir.path(), "retail");

    // Each transaction once (1% were sent twice), each refund.
    assert_same_rows(
        "transactions",
        &pg_rows(
            &pg,
            "SELECT transaction_id, product_id, quantity, round(amount::numeric * 100), \
             floor(extract(epoch FROM ts))::bigint FROM transactions"
        ),
        &batch.rows(
            "SELECT DISTINCT transaction_id, product_id, quantity, CAST(round(amount * 100) AS BIGINT), \
             CAST(to_unixtime(CAST(ts AS TIMESTAMP)) AS BIGINT) FROM transactions"
        )
    );
    assert_eq!(
        pg_rows(
            &pg,
            "SELECT refund_id, transaction_id, round(amount::numeric * 100) FROM refunds"
        ),
        batch.rows(
            "SELECT refund_id, transaction_id, CAST(round(amount * 100) AS BIGINT) FROM refunds"
        )
    );
    // Revenue per product per minute, once per transaction.
    let minutes = pg_rows(
        &pg,
        "SELECT extract(epoch FROM window_start)::bigint, product_id, \
         round(total_revenue::numeric * 100), transaction_count FROM product_metrics_minute",
    );
    assert!(minutes.len() > 1_000, "{} rows", minutes.len());
    assert_same_rows(
        "product_metrics_minute",
        &minutes,
        &batch.rows("SELECT CAST(to_unixtime(date_bin(INTERVAL '1 minute', CAST(ts AS TIMESTAMP))) AS BIGINT), \
             product_id, CAST(round(sum(amount) * 100) AS BIGINT), count(*) \
             FROM (SELECT DISTINCT transaction_id, product_id, amount, ts FROM transactions) \
             GROUP BY 1, 2"
        )
    );
}

#[test]
fn event_processor_parquet_and_kafka_equal_the_batch_answer() {
    let Some(servers) = kafka_broker("event_processor_parquet_and_kafka_equal_the_batch_answer")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = produce(&servers, "clicks");
    let updates = format!("{prefix}user-activity");
    create_topic(&servers, &updates, 1);
    run_example("event-processor", dir.path(), &servers, &prefix, None);
    let batch = Batch::new(dir.path(), "clicks");
    let processed = dir.path().join("lake/processed");
    batch.register_parquet("parquet_events", &processed.join("events"), &["eventType"]);
    batch.register_parquet("parquet_activity", &processed.join("user_activity"), &[]);

    // Mode A: every event once (3% were delivered twice), in its event type's folder.
    let event_columns = "\"eventId\", \"userId\", \"eventType\", \
                         CAST(round(value * 100) AS BIGINT), \
                         CAST(to_unixtime(\"timestamp\") AS BIGINT)";
    let expected_events = batch.rows(&format!(
        "SELECT DISTINCT {event_columns} FROM (SELECT \"eventId\", \"userId\", \"eventType\", \
         value, CAST(\"timestamp\" AS TIMESTAMP) AS \"timestamp\" FROM events)"
    ));
    assert!(expected_events.len() > 15_000, "{}", expected_events.len());
    assert_same_rows(
        "processed/events",
        &batch.rows(&format!("SELECT {event_columns} FROM parquet_events")),
        &expected_events,
    );

    // Mode B: each user's 10-minute windows over the deduplicated events.
    let expected_windows = batch.rows(
        "SELECT CAST(to_unixtime(date_bin(INTERVAL '10 minutes', CAST(\"timestamp\" AS TIMESTAMP))) \
         AS BIGINT), \"userId\", count(*), CAST(round(sum(value) * 100) AS BIGINT) \
         FROM (SELECT DISTINCT \"eventId\", \"userId\", value, \"timestamp\" FROM events) \
         GROUP BY 1, 2",
    );
    assert_same_rows(
        "processed/user_activity",
        &batch.rows(
            "SELECT CAST(to_unixtime(window_start) AS BIGINT), \"userId\", events, \
             CAST(round(total_value * 100) AS BIGINT) FROM parquet_activity",
        ),
        &expected_windows,
    );
    // The topic's latest message per key holds the same windows.
    let messages = common::read_messages(&servers, &updates, expected_windows.len());
    let mut latest = std::collections::BTreeMap::new();
    for (key, payload) in messages {
        let row: serde_json::Value = serde_json::from_str(&payload).unwrap();
        latest.insert(key.expect("keyed by window and user"), row);
    }
    let mut from_kafka: Vec<String> = latest
        .values()
        .map(|row| {
            let start = chrono::DateTime::parse_from_rfc3339(row["window_start"].as_str().unwrap())
                .map(|t| t.timestamp())
                .unwrap_or_else(|e| panic!("{row}: {e}"));
            format!(
                "{start}|{}|{}|{}",
                row["userId"].as_str().unwrap(),
                row["events"],
                (row["total_value"].as_f64().unwrap() * 100.0).round() as i64
            )
        })
        .collect();
    from_kafka.sort();
    assert_same_rows("user-activity topic", &from_kafka, &expected_windows);
}

/// `column` (text, RFC 3339) as epoch seconds of the start of its `bin`, in batch SQL.
fn binned(column: &str, bin: &str) -> String {
    format!("CAST(to_unixtime(date_bin(INTERVAL '{bin}', CAST({column} AS TIMESTAMP))) AS BIGINT)")
}

#[test]
fn microservices_postgres_tables_and_dead_letter_topic_equal_the_batch_answer() {
    let test = "microservices_postgres_tables_and_dead_letter_topic_equal_the_batch_answer";
    let Some(servers) = kafka_broker(test) else {
        return;
    };
    let Some(pg) = PgServer::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = produce(&servers, "microservices");
    let dlq = format!("{prefix}dlq.events");
    create_topic(&servers, &dlq, 1);
    run_example("microservices", dir.path(), &servers, &prefix, Some(&pg));
    let batch = Batch::new(dir.path(), "microservices");

    assert_same_rows(
        "revenue_metrics",
        &pg_rows(
            &pg,
            "SELECT floor(extract(epoch FROM window_start))::bigint, \
             round(total_revenue::numeric * 100), order_count, \
             round(avg_order_value::numeric * 100) FROM revenue_metrics",
        ),
        &batch.rows(&format!(
            "SELECT {}, CAST(round(sum(amount) * 100) AS BIGINT), count(*), \
             CAST(round(avg(amount) * 100) AS BIGINT) FROM order_created GROUP BY 1",
            binned("ts", "1 minute")
        )),
    );

    // Each order in the five 5-minute windows (sliding by a minute) that hold it.
    let per_window = |table: &str, aggregates: &str| {
        format!(
            "SELECT date_bin(INTERVAL '1 minute', CAST(ts AS TIMESTAMP)) - k.shift AS ws, \
             user_id, {aggregates} FROM {table} CROSS JOIN (VALUES (INTERVAL '0 minutes'), \
             (INTERVAL '1 minute'), (INTERVAL '2 minutes'), (INTERVAL '3 minutes'), \
             (INTERVAL '4 minutes')) AS k(shift) GROUP BY 1, 2"
        )
    };
    let alerts = pg_rows(
        &pg,
        "SELECT floor(extract(epoch FROM window_start))::bigint, user_id, order_count, \
         round(max_order_amount::numeric * 100), payment_count, alert_type FROM fraud_alerts",
    );
    assert!(alerts.len() > 20, "{} alerts", alerts.len());
    assert_same_rows(
        "fraud_alerts",
        &alerts,
        &batch.rows(&format!(
            "SELECT CAST(to_unixtime(o.ws) AS BIGINT), o.user_id, o.n, \
             CAST(round(o.mx * 100) AS BIGINT), coalesce(p.n, 0), \
             CASE WHEN o.n >= 3 THEN 'order_velocity' ELSE 'high_value' END \
             FROM ({}) o LEFT JOIN ({}) p ON o.ws = p.ws AND o.user_id = p.user_id \
             WHERE o.n >= 3 OR o.mx > 2000",
            per_window("order_created", "count(*) AS n, max(amount) AS mx"),
            per_window("payment_processed", "count(*) AS n"),
        )),
    );

    let abandoned = pg_rows(
        &pg,
        "SELECT user_id, product_id, (extract(epoch FROM item_added_time) * 1000)::bigint \
         FROM cart_abandonment",
    );
    assert!(abandoned.len() > 1_000, "{} abandoned", abandoned.len());
    assert_same_rows(
        "cart_abandonment",
        &abandoned,
        &batch.rows(
            "SELECT a.user_id, a.product_id, CAST(CAST(CAST(a.ts AS TIMESTAMP) AS BIGINT) / 1000000 \
             AS BIGINT) FROM cart_item_added a WHERE NOT EXISTS (SELECT 1 FROM \
             cart_checkout_initiated c WHERE c.user_id = a.user_id AND CAST(c.ts AS TIMESTAMP) \
             BETWEEN CAST(a.ts AS TIMESTAMP) AND CAST(a.ts AS TIMESTAMP) + INTERVAL '30 minutes')",
        ),
    );

    assert_same_rows(
        "inventory_velocity",
        &pg_rows(
            &pg,
            "SELECT floor(extract(epoch FROM window_start))::bigint, product_id, units, \
             velocity_rank FROM inventory_velocity",
        ),
        &batch.rows(&format!(
            "SELECT * FROM (SELECT ws, product_id, units, \
             DENSE_RANK() OVER (PARTITION BY ws ORDER BY units DESC) AS r FROM \
             (SELECT {} AS ws, product_id, sum(quantity) AS units FROM cart_item_added \
             GROUP BY 1, 2)) WHERE r <= 10",
            binned("ts", "1 hour")
        )),
    );

    let topics = weir_cli::example_events::KINDS
        .iter()
        .find(|(k, _)| *k == "microservices")
        .unwrap()
        .1;
    let per_topic: Vec<String> = topics
        .iter()
        .map(|t| {
            format!(
                "SELECT 'messages', count(*), '{t}', {} FROM {} GROUP BY 4",
                binned("ts", "1 minute"),
                t.replace('.', "_")
            )
        })
        .collect();
    assert_same_rows(
        "operational_metrics",
        &pg_rows(
            &pg,
            &format!(
                "SELECT metric_name, value, replace(topic, '{prefix}', ''), \
                 floor(extract(epoch FROM window_start))::bigint FROM operational_metrics"
            ),
        ),
        &batch.rows(&per_topic.join(" UNION ALL ")),
    );

    // The orders cut short, on the dead-letter topic keyed like the original.
    let broken: Vec<String> = weir_cli::example_events::generate("microservices", EVENTS, SEED)
        .unwrap()
        .into_iter()
        .filter(|e| serde_json::from_str::<serde_json::Value>(&e.payload).is_err())
        .map(|e| format!("{}|{prefix}{}|{}", e.key, e.topic, e.payload))
        .collect();
    assert!(!broken.is_empty());
    let mut dead: Vec<String> = common::read_messages(&servers, &dlq, broken.len())
        .into_iter()
        .map(|(key, payload)| {
            let m: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(key.as_deref(), m["key"].as_str(), "{m}");
            format!(
                "{}|{}|{}",
                m["key"].as_str().unwrap(),
                m["topic"].as_str().unwrap(),
                m["payload"].as_str().unwrap()
            )
        })
        .collect();
    dead.sort();
    let mut broken = broken;
    broken.sort();
    assert_eq!(dead, broken);
}
