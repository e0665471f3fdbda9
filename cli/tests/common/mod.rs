//! Helpers shared by the end-to-end tests of the `weir` binary: running it, comparing whole
//! lakes, and reaching the real Kafka broker that `scripts/test.sh` starts.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arrow::compute::concat_batches;
use datafusion::prelude::SessionContext;

pub mod postgres;
pub mod server;

/// The repository root (examples and scripts are found from there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `weir` binary built for this test run, started in the repository root.
pub fn weir() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.current_dir(repo()).env("WEIR_LOG", "warn");
    cmd
}

/// Fails the test, with `what`, the exit status and stderr, unless the process succeeded.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `weir query --lake LAKE SQL`, which must succeed; its printed table.
pub fn query(lake: &Path, sql: &str) -> String {
    let out = weir()
        .args(["query", "--lake"])
        .arg(lake)
        .arg(sql)
        .output()
        .unwrap();
    assert_success(&out, &format!("weir query {sql}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every table the ecommerce example writes (the Kafka example writes the same ones).
pub const ECOMMERCE_TABLES: [&str; 12] = [
    "bronze.events",
    "silver.events",
    "fraud.scores",
    "fraud.velocity",
    "_dead_letter.events",
    "gold.revenue_per_minute",
    "gold.merchant_15m",
    "gold.user_spend_hourly",
    "gold.country_30m",
    "gold.hourly_summary",
    "gold.top_products_hourly",
    "gold.sessions",
];

/// The tables only the ecommerce example writes: its stream joins, the window after its
/// dedupe, and its enrichment from reference tables.
pub const ECOMMERCE_JOIN_TABLES: [&str; 4] = [
    "gold.cart_abandonment",
    "gold.purchase_zscores",
    "gold.user_activity_10m",
    "gold.segment_brand_hourly",
];

/// A table's rows sorted by every column (floating-point ones last), without the columns that
/// differ by run (`ingested_at`, the wall-clock time a row was taken).
async fn sorted_rows(lake: &Path, table: &str) -> arrow::array::RecordBatch {
    let ctx = SessionContext::new();
    weir_lakehouse::register_lake(&ctx, lake).await.unwrap();
    let df = ctx
        .table(table)
        .await
        .unwrap_or_else(|e| panic!("table {table} is missing under {}: {e}", lake.display()));
    let fields: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "ingested_at")
        .cloned()
        .collect();
    let quoted = |f: &arrow::datatypes::FieldRef| format!("\"{}\"", f.name());
    let columns: Vec<String> = fields.iter().map(quoted).collect();
    let (floats, exact): (Vec<_>, Vec<_>) =
        fields.iter().partition(|f| f.data_type().is_floating());
    let order: Vec<String> = exact.into_iter().chain(floats).map(quoted).collect();
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY {}",
        columns.join(", "),
        order.join(", ")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
    concat_batches(&schema, &batches).unwrap()
}

/// Columns of approximate aggregates, compared with a relative tolerance: a t-digest's
/// percentile depends on the order its inputs are merged in, which DataFusion's parallel
/// aggregation does not fix (two uninterrupted runs differ too).
const APPROXIMATE: [(&str, &str, f64); 1] = [("gold.hourly_summary", "median_order_value", 0.05)];

/// The largest relative difference between two columns' values, `None` when they differ in
/// anything but floating-point values (nulls, other types, lengths). Doubles may differ by
/// rounding, since a sum over a different split of the same rows rounds differently.
fn float_difference(a: &dyn arrow::array::Array, b: &dyn arrow::array::Array) -> Option<f64> {
    use arrow::array::{Array, Float64Array};
    let (Some(x), Some(y)) = (
        a.as_any().downcast_ref::<Float64Array>(),
        b.as_any().downcast_ref::<Float64Array>(),
    ) else {
        return (a.to_data() == b.to_data()).then_some(0.0);
    };
    if x.len() != y.len() {
        return None;
    }
    let mut worst = 0.0_f64;
    for i in 0..x.len() {
        match (x.is_null(i), y.is_null(i)) {
            (true, true) => {}
            (false, false) => {
                let (p, q) = (x.value(i), y.value(i));
                if p != q {
                    worst = worst.max((p - q).abs() / p.abs().max(q.abs()));
                }
            }
            _ => return None,
        }
    }
    Some(worst)
}

/// Asserts that every table in `tables` holds the same multiset of rows in both lakes, and
/// that each has at least `min_rows` rows in `expected` (so the comparison proves something).
pub fn assert_same_tables(expected: &Path, actual: &Path, tables: &[&str], min_rows: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for table in tables {
            let (a, b) = (
                sorted_rows(expected, table).await,
                sorted_rows(actual, table).await,
            );
            assert!(
                a.num_rows() >= min_rows,
                "{table}: only {} rows, too few to prove anything",
                a.num_rows()
            );
            assert_eq!(
                a.num_rows(),
                b.num_rows(),
                "{table}: {} rows expected, {} found",
                a.num_rows(),
                b.num_rows()
            );
            assert_eq!(a.schema(), b.schema(), "{table}: different schemas");
            let differing = (0..a.num_columns())
                .filter_map(|i| {
                    let name = a.schema().field(i).name().clone();
                    let tolerance = APPROXIMATE
                        .iter()
                        .find(|(t, c, _)| t == table && *c == name)
                        .map_or(1e-9, |(_, _, tol)| *tol);
                    match float_difference(a.column(i), b.column(i)) {
                        Some(d) if d <= tolerance => None,
                        Some(d) => Some(format!("{name} (relative difference {d:e})")),
                        None => Some(name),
                    }
                })
                .collect::<Vec<_>>();
            assert!(
                differing.is_empty(),
                "{table}: same row count, different rows (columns {differing:?})"
            );
        }
    });
}

/// The real Kafka broker for this test run: `WEIR_TEST_KAFKA` (host:port), set by
/// `scripts/test.sh` after it started Tansu. Without it the test is skipped on a developer's
/// machine and fails under CI=true, so CI cannot pass without running it.
pub fn kafka_broker(test: &str) -> Option<String> {
    match std::env::var("WEIR_TEST_KAFKA") {
        Ok(servers) if !servers.is_empty() => Some(servers),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test} skipped in CI: no broker; run the tests with scripts/test.sh, which \
                 starts Tansu (scripts/tansu.sh install builds it once)"
            );
            eprintln!(
                "skipping {test}: WEIR_TEST_KAFKA is not set (scripts/test.sh starts a broker \
                 when Tansu is installed: scripts/tansu.sh install)"
            );
            None
        }
    }
}

/// A topic name no other test or run uses.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates `topic` with `partitions` partitions on `servers` and waits until its metadata
/// shows them.
pub fn create_topic(servers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let (runtime, admin) = admin(servers);
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    // A busy broker (a loaded CI machine) may time a metadata request out: ask again.
    let mut last_error = None;
    for _ in 0..100 {
        let metadata = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => metadata,
            Err(e) => {
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {topic} did not show {partitions} partitions (last error: {last_error:?})");
}

/// Deletes `topic` on `servers`.
pub fn delete_topic(servers: &str, topic: &str) {
    let (runtime, admin) = admin(servers);
    let results = runtime
        .block_on(admin.delete_topics(&[topic], &rdkafka::admin::AdminOptions::new()))
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot delete topic {t}: {e}"));
    }
}

/// An admin client for `servers`, with a runtime to wait on its requests.
fn admin(
    servers: &str,
) -> (
    tokio::runtime::Runtime,
    rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
) {
    let admin = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    (tokio::runtime::Runtime::new().unwrap(), admin)
}

/// `weir produce` of `events` generated ecommerce events (with the generator's duplicates,
/// late and malformed records) to `topic`.
pub fn produce_events(servers: &str, topic: &str, events: u64) {
    let out = weir()
        .args(["produce", "--topic", topic, "--bootstrap", servers])
        .args(["--from-generator", "ecommerce", "--events"])
        .arg(events.to_string())
        .output()
        .unwrap();
    assert_success(&out, "weir produce");
}

/// Reads the messages of `topic` from its start as (key, payload) text: waits up to 30 s for
/// `expected` of them, then 2 s more for any extra (so a test sees duplicates too).
pub fn read_messages(servers: &str, topic: &str, expected: usize) -> Vec<(Option<String>, String)> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use std::time::Instant;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("check-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(30);
    let mut extra_wait = false;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
        if out.len() >= expected && !extra_wait {
            extra_wait = true;
            deadline = Instant::now() + Duration::from_secs(2);
        }
    }
    out
}

/// The waits before each SIGKILL of a crash test: seeded-random (SplitMix64), and longer after
/// every kill that found no epoch committed since the one before (a busy machine gets less done
/// in the same time), so the kills keep landing in later epochs however slow the machine is.
pub struct KillDelays {
    seed: u64,
    min_ms: u64,
    spread_ms: u64,
    stalls: u64,
    last_committed: Option<usize>,
}

impl KillDelays {
    /// Delays of `min_ms` plus up to `spread_ms`, from `seed`.
    pub fn new(seed: u64, min_ms: u64, spread_ms: u64) -> Self {
        KillDelays {
            seed,
            min_ms,
            spread_ms,
            stalls: 0,
            last_committed: None,
        }
    }

    /// The next wait, given how many epochs are committed now.
    pub fn next(&mut self, committed: usize) -> Duration {
        match self.last_committed {
            Some(last) if committed <= last => self.stalls += 1,
            _ => self.stalls = 0,
        }
        self.last_committed = Some(committed);
        self.seed = weir_engine::source::generator::ecommerce::splitmix(self.seed);
        let base = self.min_ms + self.seed % self.spread_ms;
        Duration::from_millis(base * (1 + self.stalls.min(8)))
    }
}

/// A pipeline folder `dir` holding the ecommerce example's generator source
/// (`01_sources.sql`: EVENTS, EVENTS_PER_TRIGGER from the environment) and `tables` as
/// `02_tables.sql`.
pub fn pipeline_on_example_source(dir: &Path, tables: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        repo().join("examples/ecommerce/01_sources.sql"),
        dir.join("01_sources.sql"),
    )
    .unwrap();
    std::fs::write(dir.join("02_tables.sql"), tables).unwrap();
}

/// The values of a one-column `weir query` result, one per row (the header row left out).
pub fn query_lines(lake: &Path, sql: &str) -> Vec<String> {
    query(lake, sql)
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_string())
        .collect()
}
