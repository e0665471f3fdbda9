//! End to end against a real Kafka-protocol broker (Tansu, started by `scripts/test.sh`; see
//! `common::kafka_broker`): exactly-once into Delta across `kill -9` crashes at every step of
//! an epoch and at random moments, a broker restarted mid-run, two Kafka sources plus a Kafka
//! sink in one pipeline, missing, deleted and recreated topics, and a partition added to a topic
//! while a pipeline reads it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_same_tables, assert_success, create_topic, delete_topic, kafka_broker, produce_events,
    query, read_messages, repo, unique_topic, weir, ECOMMERCE_TABLES,
};
use weir_engine::runtime::crash_point::CRASH_POINTS;

/// `weir run examples/kafka --once` over `topic` into `lake`, `per_trigger` records an epoch.
fn run_kafka_example(lake: &Path, servers: &str, topic: &str, per_trigger: u64) -> Command {
    run_pipeline(
        &repo().join("examples/kafka"),
        lake,
        servers,
        topic,
        per_trigger,
    )
}

/// `weir run PIPELINE --once` with the Kafka example's variables.
fn run_pipeline(
    pipeline: &Path,
    lake: &Path,
    servers: &str,
    topic: &str,
    per_trigger: u64,
) -> Command {
    let mut cmd = weir();
    cmd.args(["run", "--once", "--progress", "quiet", "--lake"])
        .arg(lake)
        .arg(pipeline)
        .env("KAFKA_BOOTSTRAP", servers)
        .env("TOPIC", topic)
        .env("RECORDS_PER_TRIGGER", per_trigger.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Issue 4's crash test: 200,000 events (with duplicates, late and malformed ones) on a
/// 3-partition topic; the ecommerce pipeline in 10,000-record epochs is crashed once at each
/// step of the commit protocol and then `kill -9`ed at random moments (WEIR_CRASH_KILLS times,
/// default 10; scripts/kafka-crash-test.sh runs 50), restarted each time. Every table, the
/// windowed gold tables and the dead letters included, must equal one uninterrupted run's.
#[test]
fn kafka_pipeline_killed_at_every_step_and_at_random_equals_uninterrupted_run() {
    let Some(servers) = kafka_broker("the Kafka crash test") else {
        return;
    };
    let topic = unique_topic("crash");
    create_topic(&servers, &topic, 3);
    produce_events(&servers, &topic, 200_000);
    let per_trigger = 10_000;

    let started = Instant::now();
    let reference = tempfile::tempdir().unwrap();
    let out = run_kafka_example(reference.path(), &servers, &topic, per_trigger)
        .output()
        .unwrap();
    assert_success(&out, "the uninterrupted run");
    eprintln!("uninterrupted run done after {:?}", started.elapsed());

    let crashed = tempfile::tempdir().unwrap();
    // Deterministic crashes, one at each step, in consecutive epochs: each restart first
    // replays the epoch the previous run left half-done.
    for (epoch, point) in (2u64..).zip(CRASH_POINTS) {
        let out = run_kafka_example(crashed.path(), &servers, &topic, per_trigger)
            .env("WEIR_CRASH_AT", format!("{point}@{epoch}"))
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the run did not crash at {point} of epoch {epoch}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Then kill -9 at random moments (a SplitMix64 sequence, so a failure can be replayed).
    let wanted: u32 = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut seed = 0x006b_6166_6b61_u64;
    let (mut kills, mut attempts) = (0, 0);
    while kills < wanted && attempts < wanted * 3 {
        attempts += 1;
        seed = weir_engine::source::generator::ecommerce::splitmix(seed);
        let delay = Duration::from_millis(300 + seed % 3_000);
        let log = crashed.path().join("restart.log");
        let mut child = run_kafka_example(crashed.path(), &servers, &topic, per_trigger)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        } else {
            // A run that ended by itself before its kill: say how, so a failure is explained.
            let status = child.wait().unwrap();
            eprintln!(
                "restart {attempts} ended by itself ({status}) before {delay:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= wanted,
        "only {kills} of {attempts} runs were killed mid-way"
    );
    let out = run_kafka_example(crashed.path(), &servers, &topic, per_trigger)
        .output()
        .unwrap();
    assert_success(&out, "the final restart");
    eprintln!(
        "{kills} kills and the final run done after {:?}",
        started.elapsed()
    );
    assert_same_tables(reference.path(), crashed.path(), &ECOMMERCE_TABLES, 1);
    eprintln!("tables compared after {:?}", started.elapsed());
}

/// A broker of this test's own (the shared one must stay up for the other tests), stopped by
/// its PID when the test ends.
struct OwnBroker {
    dir: tempfile::TempDir,
    port: String,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(repo().join("scripts/tansu.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_success(&out, "scripts/tansu.sh start");
        let servers = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let port = servers.rsplit(':').next().unwrap().to_string();
        OwnBroker { dir, port }
    }

    fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the broker gets no chance to close connections or flush anything.
    fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("tansu.pid")).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::remove_file(self.dir.path().join("tansu.pid")).unwrap();
    }

    /// Stops the broker (SIGTERM, by its PID) and waits until it has exited.
    fn stop(&self) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/tansu.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert_success(&out, "scripts/tansu.sh stop");
    }

    /// Gives `topic` one more partition and returns its number; the broker must be stopped.
    /// Tansu 0.6.0 has no CreatePartitions API, so this writes to its SQLite store the rows its
    /// own CreateTopics writes for a partition: the topic's partition count, a `topition` and
    /// that partition's `watermark`.
    fn add_partition(&self, topic: &str) -> i32 {
        const SCRIPT: &str = "
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
topic_id, partitions = db.execute(
    'select id, partitions from topic where name = ?', (sys.argv[2],)).fetchone()
db.execute('update topic set partitions = ? where id = ?', (partitions + 1, topic_id))
topition = db.execute(
    'insert into topition (topic, partition) values (?, ?)', (topic_id, partitions)).lastrowid
db.execute('insert into watermark (topition) values (?)', (topition,))
db.commit()
print(partitions)
";
        let out = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(self.dir.path().join("tansu.db"))
            .arg(topic)
            .output()
            .unwrap();
        assert_success(&out, "adding a partition to Tansu's store");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Starts the broker again on the same port with the same data.
    fn restart(&self) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/tansu.sh"))
            .arg("start")
            .arg(self.dir.path())
            .arg(&self.port)
            .output()
            .unwrap();
        assert_success(&out, "restarting the broker");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/tansu.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The broker is killed while Weir reads and started again seconds later: Weir waits for it
/// (saying so), resumes, and the tables equal a run that never saw the outage.
#[test]
fn broker_killed_and_restarted_mid_run_loses_and_duplicates_nothing() {
    if kafka_broker("the broker restart test").is_none() {
        return;
    }
    let broker = OwnBroker::start();
    let servers = broker.servers();
    let topic = unique_topic("restart");
    create_topic(&servers, &topic, 3);
    produce_events(&servers, &topic, 60_000);
    let per_trigger = 3_000;
    // The Kafka example's source, bronze and silver tables (the gold tables are the crash
    // test's business; they would only make this one slower).
    let pipeline = tempfile::tempdir().unwrap();
    for file in ["01_sources.sql", "02_bronze.sql", "03_silver.sql"] {
        std::fs::copy(
            repo().join("examples/kafka").join(file),
            pipeline.path().join(file),
        )
        .unwrap();
    }

    let reference = tempfile::tempdir().unwrap();
    let out = run_pipeline(
        pipeline.path(),
        reference.path(),
        &servers,
        &topic,
        per_trigger,
    )
    .output()
    .unwrap();
    assert_success(&out, "the run without outage");

    let interrupted = tempfile::tempdir().unwrap();
    // Warnings only (the default of these tests), so the piped log stays small while the run
    // waits for the broker.
    let mut child = run_pipeline(
        pipeline.path(),
        interrupted.path(),
        &servers,
        &topic,
        per_trigger,
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the broker was killed; give it more records"
    );
    broker.kill();
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended while the broker was down instead of waiting for it"
    );
    broker.restart();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "the run across the broker restart");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines()
            .any(|l| l.contains(&servers)
                && (l.contains("unreachable") || l.contains("waiting for"))),
        "nothing in the log says which broker Weir waited for:\n{log}"
    );
    assert_same_tables(
        reference.path(),
        interrupted.path(),
        &["bronze.events", "silver.events", "_dead_letter.events"],
        50,
    );
}

/// Two Kafka sources run in the same epochs, and a table is written to a Kafka topic as JSON
/// with its key and `_epoch`; `weir status` then shows no lag on either source.
#[test]
fn two_kafka_sources_and_a_kafka_sink_in_one_pipeline() {
    let Some(servers) = kafka_broker("the two-source Kafka test") else {
        return;
    };
    let (transactions, refunds, alerts) = (
        unique_topic("transactions"),
        unique_topic("refunds"),
        unique_topic("alerts"),
    );
    create_topic(&servers, &transactions, 3);
    create_topic(&servers, &refunds, 1);
    create_topic(&servers, &alerts, 1);
    let dir = tempfile::tempdir().unwrap();
    let tx_file = dir.path().join("tx.jsonl");
    let rf_file = dir.path().join("rf.jsonl");
    let tx: String = (0..500)
        .map(|i| {
            format!(
                "{{\"id\":\"t{i}\",\"user_id\":\"u{}\",\"amount\":{}}}\n",
                i % 7,
                (i * 37) % 1000
            )
        })
        .collect();
    let rf: String = (0..120)
        .map(|i| {
            format!(
                "{{\"id\":\"r{i}\",\"tx_id\":\"t{}\",\"amount\":5}}\n",
                i * 4
            )
        })
        .collect();
    std::fs::write(&tx_file, tx).unwrap();
    std::fs::write(&rf_file, rf).unwrap();
    for (topic, file) in [(&transactions, &tx_file), (&refunds, &rf_file)] {
        let out = weir()
            .args([
                "produce",
                "--topic",
                topic,
                "--bootstrap",
                &servers,
                "--file",
            ])
            .arg(file)
            .output()
            .unwrap();
        assert_success(&out, "weir produce");
    }
    let pipeline = dir.path().join("shop.sql");
    std::fs::write(
        &pipeline,
        format!(
            "CREATE SOURCE transactions (id TEXT NOT NULL, user_id TEXT, amount DOUBLE)
             WITH (connector = 'kafka', topic = '{transactions}',
                   'bootstrap.servers' = '{servers}', max_records_per_trigger = 150);
             CREATE SOURCE refunds (id TEXT NOT NULL, tx_id TEXT, amount DOUBLE)
             WITH (connector = 'kafka', topic = '{refunds}',
                   'bootstrap.servers' = '{servers}', max_records_per_trigger = 50);
             CREATE TABLE tx AS
             SELECT id, user_id, amount, _topic, _partition, _offset, _epoch FROM transactions;
             CREATE TABLE rf AS SELECT id, tx_id, amount, _epoch FROM refunds;
             CREATE TABLE big_spends WITH (connector = 'kafka', topic = '{alerts}',
                   'bootstrap.servers' = '{servers}', key = 'user_id', format = 'json') AS
             SELECT user_id, amount FROM transactions WHERE amount >= 900;"
        ),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let out = weir()
        .args(["run", "--once", "--progress", "quiet", "--lake"])
        .arg(&lake)
        .arg(&pipeline)
        .output()
        .unwrap();
    assert_success(&out, "the two-source pipeline");

    // Every record once: 500 distinct (partition, offset) pairs, 120 refunds.
    let counts = query(
        &lake,
        "SELECT (SELECT count(DISTINCT (_partition, _offset)) FROM tx) AS tx, \
                (SELECT count(*) FROM tx) AS tx_rows, \
                (SELECT count(DISTINCT id) FROM rf) AS rf, \
                (SELECT count(*) FROM rf) AS rf_rows",
    );
    assert!(
        counts.contains("| 500 | 500     | 120 | 120     |"),
        "{counts}"
    );
    // Both sources advance in the same epochs: epochs 1 and 2 read from both topics.
    let epochs = query(
        &lake,
        "SELECT e, (SELECT count(*) FROM tx WHERE _epoch = e) AS tx, \
                (SELECT count(*) FROM rf WHERE _epoch = e) AS rf \
         FROM (VALUES (1), (2)) AS t(e) ORDER BY e",
    );
    assert!(epochs.contains("| 1 | 150 | 50 |"), "{epochs}");
    assert!(epochs.contains("| 2 | 150 | 50 |"), "{epochs}");

    // The sink: one JSON message per big spend, keyed by user, with its epoch.
    let expected = (0..500).filter(|i| (i * 37) % 1000 >= 900).count();
    let messages = read_messages(&servers, &alerts, expected);
    assert_eq!(messages.len(), expected);
    for (key, payload) in &messages {
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(key.as_deref(), value["user_id"].as_str(), "{payload}");
        assert!(value["amount"].as_f64().unwrap() >= 900.0, "{payload}");
        assert!(value["_epoch"].as_u64().is_some(), "{payload}");
    }

    // The consumer group (default `weir-<pipeline>-<source>`) holds the committed offsets,
    // for the usual lag tools.
    {
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let group: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", "weir-shop-transactions")
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        for p in 0..3 {
            partitions.add_partition(&transactions, p);
        }
        let committed = group
            .committed_offsets(partitions, Duration::from_secs(10))
            .unwrap();
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 500, "{committed:?}");
    }

    // Consumer lag from the brokers: nothing left on either source.
    let out = weir()
        .args(["status", "--lake"])
        .arg(&lake)
        .arg(&pipeline)
        .output()
        .unwrap();
    assert_success(&out, "weir status");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("lag of transactions (from the brokers): 0 records"),
        "{status}"
    );
    assert!(
        status.contains("lag of refunds (from the brokers): 0 records"),
        "{status}"
    );
    assert!(
        status.contains(&format!("{transactions}/2: committed up to")),
        "{status}"
    );
}

/// A topic that does not exist, and one deleted and created again under a pipeline's
/// feet, are errors that say so and what to do; `on_offset_out_of_range = 'earliest'` then
/// reads the new topic from its start. A topic deleted under a running pipeline that has
/// caught up stops it with that error.
#[test]
fn missing_or_recreated_topic_is_a_clear_error() {
    if kafka_broker("the recreated-topic test").is_none() {
        return;
    }
    // A broker of its own: deleting one topic on Tansu 0.6.0 drops every topic of the broker
    // (`tansu topic list` is empty afterwards), which broke the other tests' topics.
    let broker = OwnBroker::start();
    let servers = broker.servers();
    let topic = unique_topic("recreated");
    let dir = tempfile::tempdir().unwrap();
    let pipeline_on = |topic: &str, extra: &str| {
        let path = dir.path().join(format!("{topic}.sql"));
        std::fs::write(
            &path,
            format!(
                "CREATE SOURCE orders (id TEXT NOT NULL) WITH (connector = 'kafka', \
                 topic = '{topic}', 'bootstrap.servers' = '{servers}'{extra});
                 CREATE TABLE orders_copy AS SELECT id, _offset FROM orders;"
            ),
        )
        .unwrap();
        path
    };
    let pipeline = |extra: &str| pipeline_on(&topic, extra);
    let lake = dir.path().join("lake");
    let run = |path: &Path| {
        weir()
            .args(["run", "--once", "--progress", "quiet", "--lake"])
            .arg(&lake)
            .arg(path)
            .output()
            .unwrap()
    };
    let produce_to = |topic: &str, n: usize| {
        let file = dir.path().join("orders.jsonl");
        let lines: String = (0..n).map(|i| format!("{{\"id\":\"o{i}\"}}\n")).collect();
        std::fs::write(&file, lines).unwrap();
        let out = weir()
            .args([
                "produce",
                "--topic",
                topic,
                "--bootstrap",
                &servers,
                "--file",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert_success(&out, "weir produce");
    };
    let produce = |n: usize| produce_to(&topic, n);

    let out = run(&pipeline(""));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("topic `{topic}` does not exist")) && stderr.contains("create it"),
        "{stderr}"
    );

    create_topic(&servers, &topic, 1);
    produce(100);
    assert_success(&run(&pipeline("")), "the first run");
    delete_topic(&servers, &topic);
    create_topic(&servers, &topic, 1);
    produce(10);
    let out = run(&pipeline(""));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{topic}/0"))
            && stderr.contains("up to offset 100")
            && stderr.contains("deleted and created again")
            && stderr.contains("on_offset_out_of_range = 'earliest'"),
        "{stderr}"
    );

    assert_success(
        &run(&pipeline(", on_offset_out_of_range = 'earliest'")),
        "the run that skips to the new topic's start",
    );
    let table = query(
        &lake,
        "SELECT count(*) AS n, max(_offset) AS last FROM orders_copy",
    );
    assert!(table.contains("| 110 | 99   |"), "{table}");

    // A topic deleted under a running pipeline that has caught up: the next plan finds it
    // gone and the run stops with the error (exit status 1, not a crash).
    let idle = unique_topic("deleted");
    create_topic(&servers, &idle, 1);
    produce_to(&idle, 20);
    let idle_lake = dir.path().join("idle-lake");
    let log = std::fs::File::create(dir.path().join("idle.log")).unwrap();
    let mut running = weir()
        .args(["run", "--progress", "quiet", "--lake"])
        .arg(&idle_lake)
        .arg(pipeline_on(&idle, ""))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let caught_up = Instant::now();
    // Tables exist (empty) from the start; wait for the topic's 20 rows.
    while !idle_lake.join("orders_copy/_delta_log").exists()
        || !query(&idle_lake, "SELECT count(*) AS n FROM orders_copy").contains("| 20 |")
    {
        assert!(
            caught_up.elapsed() < Duration::from_secs(120),
            "the continuous run did not write the topic's 20 rows in 120 s:\n{}",
            std::fs::read_to_string(dir.path().join("idle.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(running.try_wait().unwrap().is_none(), "the run ended early");
    delete_topic(&servers, &idle);
    let deleted = Instant::now();
    let status = loop {
        if let Some(status) = running.try_wait().unwrap() {
            break status;
        }
        if deleted.elapsed() > Duration::from_secs(180) {
            running.kill().unwrap();
            panic!(
                "the run did not stop within 180 s of its topic's deletion:\n{}",
                std::fs::read_to_string(dir.path().join("idle.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = std::fs::read_to_string(dir.path().join("idle.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("topic `{idle}` does not exist")),
        "{stderr}"
    );
}

/// A partition added to a topic while a pipeline runs is picked up by the next plan and read
/// from its first offset, next to the partitions it already read, across the broker restart the
/// addition takes here (Tansu adds partitions only in its store, see `OwnBroker::add_partition`).
#[test]
fn partition_added_while_running_is_read_from_its_start() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    if kafka_broker("the added-partition test").is_none() {
        return;
    }
    let broker = OwnBroker::start();
    let servers = broker.servers();
    let topic = unique_topic("grown");
    create_topic(&servers, &topic, 1);
    let produce = |partition: i32, from: usize, to: usize| {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()
            .unwrap();
        for i in from..to {
            let payload = format!("{{\"id\":\"p{partition}-{i}\"}}");
            producer
                .send(
                    BaseRecord::<(), str>::to(&topic)
                        .partition(partition)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    produce(0, 0, 100);

    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("orders.sql");
    std::fs::write(
        &pipeline,
        format!(
            "CREATE SOURCE orders (id TEXT NOT NULL) WITH (connector = 'kafka', \
             topic = '{topic}', 'bootstrap.servers' = '{servers}');
             CREATE TABLE orders_copy AS SELECT id, _partition, _offset FROM orders;"
        ),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let log_path = dir.path().join("run.log");
    let mut running = weir()
        .args([
            "run",
            "--progress",
            "text", // epoch lines in the log, printed if the test fails
            "--trigger-interval",
            "0.5",
            "--lake",
        ])
        .arg(&lake)
        .arg(&pipeline)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let count_rows = || {
        if !lake.join("orders_copy/_delta_log").exists() {
            return String::new();
        }
        query(
            &lake,
            "SELECT _partition, count(*) AS n, min(_offset) AS first, max(_offset) AS last \
             FROM orders_copy GROUP BY _partition ORDER BY _partition",
        )
    };
    let wait_for = |what: &str, expected: &[&str], running: &mut std::process::Child| {
        let started = Instant::now();
        loop {
            let table = count_rows();
            if expected.iter().all(|row| table.contains(row)) {
                return table;
            }
            if let Some(status) = running.try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before {what}:\n{table}\n{}",
                    std::fs::read_to_string(&log_path).unwrap()
                );
            }
            if started.elapsed() > Duration::from_secs(120) {
                running.kill().unwrap();
                let missing: Vec<&&str> = expected
                    .iter()
                    .filter(|row| !table.contains(*row))
                    .collect();
                panic!(
                    "no {what} within 120 s: missing {missing:?} in\n{table}\nthe run's log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    wait_for(
        "first 100 rows",
        &["| 0          | 100 | 0     | 99   |"],
        &mut running,
    );

    broker.stop();
    assert_eq!(broker.add_partition(&topic), 1);
    broker.restart();
    produce(1, 0, 50);
    produce(0, 100, 110);
    let table = wait_for(
        "rows of both partitions after the restart",
        &[
            "| 0          | 110 | 0     | 109  |",
            "| 1          | 50  | 0     | 49   |",
        ],
        &mut running,
    );
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        3,
        "{table}"
    );
}

/// `weir run --metrics-addr` over a 3-partition topic: every partition's lag is a series of
/// its own, and at every epoch the lag and the records read add up to what the topic holds.
#[test]
fn kafka_lag_per_partition_is_in_the_metrics() {
    let Some(servers) = kafka_broker("the Kafka lag metrics test") else {
        return;
    };
    let topic = unique_topic("lag");
    create_topic(&servers, &topic, 3);
    produce_events(&servers, &topic, 3000);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("lagging");
    std::fs::create_dir_all(&pipeline).unwrap();
    for file in ["01_sources.sql", "02_bronze.sql"] {
        std::fs::copy(
            repo().join("examples/kafka").join(file),
            pipeline.join(file),
        )
        .unwrap();
    }
    let (mut run, port) = common::server::run_with_metrics(
        &pipeline,
        &dir.path().join("lake"),
        &[
            ("KAFKA_BOOTSTRAP", servers.as_str()),
            ("TOPIC", topic.as_str()),
            ("RECORDS_PER_TRIGGER", "300"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_lagging = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "the run did not read the topic within 120 s"
        );
        std::thread::sleep(Duration::from_millis(300));
        let Some(text) = common::server::scrape_metrics(port) else {
            continue;
        };
        let lags: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with("weir_kafka_lag_records{"))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_string(), value.parse().unwrap())
            })
            .collect();
        let read = common::server::metric_value(&text, "weir_source_records_total{");
        let (Some(read), 3) = (read, lags.len()) else {
            continue;
        };
        for (series, _) in &lags {
            assert!(
                series.contains(&format!("topic=\"{topic}\""))
                    && series.contains("source=\"events\""),
                "{series}"
            );
        }
        let lag: f64 = lags.iter().map(|(_, v)| v).sum();
        assert_eq!(
            lag + read,
            3000.0,
            "lag and records read do not add up:\n{text}"
        );
        seen_lagging |= lag > 0.0;
        if lag == 0.0 {
            break;
        }
    }
    let _ = run.kill();
    let _ = run.wait();
    assert!(seen_lagging, "the lag was never seen above 0");
    delete_topic(&servers, &topic);
}
