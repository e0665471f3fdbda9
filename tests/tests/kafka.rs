//! The Kafka source against librdkafka's in-process mock cluster (no service needed): exact
//! offset ranges per partition, metadata columns, dead letters, `--once` up to the end offsets
//! as of start, a restart that reads only what is new, and a topic deleted mid-backlog.

use std::path::Path;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_tests::{lake_context, run_pipeline, run_pipeline_observed, scalar, TestError};

/// Produces events `from..to` round-robin over 3 partitions; every 50th is broken JSON.
fn produce(servers: &str, from: i64, to: i64) -> Result<(), TestError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    for i in from..to {
        let payload = if i % 50 == 7 {
            format!(r#"{{"id":{i},"amount":"#)
        } else {
            format!(r#"{{"id":{i},"amount":{}.5}}"#, i % 100)
        };
        let key = format!("k{}", i % 10);
        producer
            .send(
                BaseRecord::to("orders")
                    .partition((i % 3) as i32)
                    .key(&key)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn write_pipeline(dir: &Path, servers: &str) -> Result<std::path::PathBuf, TestError> {
    let path = dir.join("p.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE SOURCE orders (id BIGINT NOT NULL, amount DOUBLE)
             WITH (connector = 'kafka', topic = 'orders', bootstrap.servers = '{servers}',
                   max_records_per_trigger = 120);
             CREATE TABLE raw AS SELECT *, _topic, _partition, _offset, _key FROM orders;"
        ),
    )?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_ranges_are_read_exactly_once_across_runs() -> Result<(), TestError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 3, 1)?;
    let servers = cluster.bootstrap_servers();
    produce(&servers, 0, 300)?;

    let dir = tempfile::tempdir()?;
    let pipeline = write_pipeline(dir.path(), &servers)?;
    let lake = dir.path().join("lake");
    let first = run_pipeline(&pipeline, &lake, &[]).await?;
    assert!(first.epochs.len() >= 3, "120 records per epoch at most");
    let ctx = lake_context(&lake).await?;
    let good = scalar(&ctx, "SELECT count(*) FROM raw").await?;
    let dead = scalar(&ctx, "SELECT count(*) FROM _dead_letter.orders").await?;
    assert_eq!((good, dead), (294, 6));
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(DISTINCT (_partition, _offset)) FROM raw"
        )
        .await?,
        294
    );
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM raw WHERE _partition = CAST(id % 3 AS INT) AND _key = concat('k', CAST(id % 10 AS VARCHAR)) AND _topic = 'orders'").await?,
        294,
        "metadata columns match what was produced"
    );
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM _dead_letter.orders WHERE position LIKE '_topic=orders _partition=% _offset=%'").await?,
        6,
        "dead letters name topic, partition and offset"
    );

    // A restart reads only what was produced since.
    produce(&servers, 300, 390)?;
    let second = run_pipeline(&pipeline, &lake, &[]).await?;
    assert!(!second.epochs.is_empty());
    let ctx = lake_context(&lake).await?;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM raw").await?, 294 + 88);
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT id) FROM raw").await?,
        294 + 88
    );
    Ok(())
}

/// A `connector = 'kafka'` table sends each epoch's rows as JSON, keyed by its `key` column and
/// carrying `_epoch`, so consumers can drop the repeats of a replayed epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_table_sends_each_row_as_keyed_json() -> Result<(), TestError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 3, 1)?;
    cluster.create_topic("big_orders", 1, 1)?;
    let servers = cluster.bootstrap_servers();
    produce(&servers, 0, 200)?;
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("p.sql");
    std::fs::write(
        &pipeline,
        format!(
            "CREATE SOURCE orders (id BIGINT NOT NULL, amount DOUBLE)
             WITH (connector = 'kafka', topic = 'orders', bootstrap.servers = '{servers}');
             CREATE TABLE big_orders WITH (connector = 'kafka', topic = 'big_orders',
                 bootstrap.servers = '{servers}', key = 'id', format = 'json') AS
             SELECT id, amount FROM orders WHERE amount >= 50;"
        ),
    )?;
    let run = run_pipeline(&pipeline, &dir.path().join("lake"), &[]).await?;
    let sent = run.summary.rows_out["big_orders"];
    assert!(sent > 50, "sent {sent}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&["big_orders"])?;
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (received.len() as u64) < sent && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            assert_eq!(key, value["id"].to_string(), "keyed by id");
            assert!(value["amount"].as_f64().is_some_and(|a| a >= 50.0));
            assert!(value["_epoch"].as_i64().is_some_and(|e| e >= 1));
            received.push(key);
        }
    }
    assert_eq!(received.len() as u64, sent, "every row arrives");
    received.sort();
    received.dedup();
    assert_eq!(received.len() as u64, sent, "each row once");
    Ok(())
}

/// The watermark is tracked per partition and is the minimum over active partitions: a
/// partition an hour ahead does not close the windows of a partition that is behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_is_the_minimum_over_partitions() -> Result<(), TestError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("clicks", 2, 1)?;
    let servers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()?;
    let start = 1_709_251_200_000i64; // 2024-03-01T00:00:00Z
    for i in 0..20i64 {
        // Partition 0 is an hour ahead of partition 1.
        for (partition, offset_ms) in [(0, 3_600_000), (1, 0)] {
            let payload = format!(r#"{{"n":{i},"ts":{}}}"#, start + offset_ms + i * 1000);
            producer
                .send(
                    BaseRecord::<(), str>::to("clicks")
                        .partition(partition)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("p.sql");
    std::fs::write(
        &pipeline,
        format!(
            "CREATE SOURCE clicks (n BIGINT, ts TIMESTAMP NOT NULL,
                 WATERMARK FOR ts AS ts - INTERVAL '1 minute')
             WITH (connector = 'kafka', topic = 'clicks', bootstrap.servers = '{servers}',
                   max_records_per_trigger = 10);
             CREATE TABLE per_minute AS SELECT window_start, window_end, count(*) AS n
             FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;"
        ),
    )?;
    let run = run_pipeline(&pipeline, &dir.path().join("lake"), &[]).await?;
    let last = run
        .epochs
        .last()
        .and_then(|e| e.watermark_ms)
        .ok_or("no watermark")?;
    assert!(
        last < start + 60_000,
        "watermark {last} follows the partition that is behind (start {start})"
    );
    assert_eq!(
        run.summary.rows_out["per_minute"], 0,
        "no window is complete yet"
    );
    Ok(())
}

/// `starting_offsets = 'latest'` skips what the topic held when the source first planned, and
/// then reads everything produced after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_at_the_end_then_reads_what_follows() -> Result<(), TestError> {
    use weir_engine::options::Options;
    use weir_engine::source::{KafkaSource, Source};

    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 3, 1)?;
    let servers = cluster.bootstrap_servers();
    produce(&servers, 0, 30)?;
    let mut options = Options::new([
        ("topic".to_string(), "orders".to_string()),
        ("bootstrap.servers".to_string(), servers.clone()),
        ("starting_offsets".to_string(), "latest".to_string()),
    ]);
    let mut source = KafkaSource::from_options("p", "orders", &mut options)?;
    assert_eq!(source.plan_next(false)?, None, "nothing new at the start");
    produce(&servers, 30, 42)?;
    let range = source
        .plan_next(false)?
        .ok_or("the records produced after the start were not planned")?;
    let batch = source.read(&range)?;
    assert_eq!(
        batch.len(),
        12,
        "exactly the 12 records produced after the start"
    );
    source.advance(&range)?;
    assert_eq!(source.plan_next(false)?, None, "caught up: fetching pauses");
    produce(&servers, 42, 50)?;
    let range = source
        .plan_next(false)?
        .ok_or("the records produced while paused were not planned")?;
    let batch = source.read(&range)?;
    let mut ids: Vec<String> = (0..batch.len())
        .map(|i| String::from_utf8_lossy(batch.record(i)).into_owned())
        .filter_map(|r| {
            Some(
                r.split("\"id\":")
                    .nth(1)?
                    .split([',', '}'])
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    ids.sort();
    let expected: Vec<String> = (42..50).map(|i| i.to_string()).collect();
    assert_eq!(
        ids, expected,
        "fetching resumes with exactly the 8 new records"
    );
    source.advance(&range)?;
    assert_eq!(source.plan_next(false)?, None);
    Ok(())
}

/// A topic deleted while a pipeline still reads its backlog ends the run with an error that
/// names the topic and says what to do; the epochs committed before stay committed. The mock
/// cluster answers every request for the topic with UNKNOWN_TOPIC_OR_PART from epoch 2 on, as
/// a broker does once the topic is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_deleted_mid_backlog_is_a_clear_error() -> Result<(), TestError> {
    use rdkafka::types::RDKafkaRespErr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cluster = MockCluster::new(1)?;
    cluster.create_topic("orders", 3, 1)?;
    let servers = cluster.bootstrap_servers();
    produce(&servers, 0, 3000)?;
    let dir = tempfile::tempdir()?;
    let pipeline = write_pipeline(dir.path(), &servers)?;
    let lake = dir.path().join("lake");

    let second_epoch_done = Arc::new(AtomicBool::new(false));
    let flag = second_epoch_done.clone();
    let run = run_pipeline_observed(
        &pipeline,
        &lake,
        &[],
        false,
        Arc::new(move |r| flag.store(r.epoch >= 2, Ordering::SeqCst)),
    );
    let delete = async {
        while !second_epoch_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.topic_error(
            "orders",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
    };
    let (result, deleted) = tokio::join!(run, delete);
    deleted?;
    let err = result
        .expect_err("3,000 records at 120 an epoch outlast the topic")
        .to_string();
    assert!(
        err.contains("topic `orders`") && err.contains("create it"),
        "{err}"
    );
    let ctx = lake_context(&lake).await?;
    let rows = scalar(&ctx, "SELECT count(*) FROM raw").await?;
    assert!((2 * 117..3000).contains(&rows), "{rows} rows committed");
    Ok(())
}

/// Sends `count` records to one partition of `topic`.
fn produce_to_partition(
    servers: &str,
    topic: &str,
    partition: i32,
    count: usize,
) -> Result<(), TestError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    for i in 0..count {
        let payload = format!(r#"{{"id":{i}}}"#);
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(partition)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// A partition that was paused while the source had caught up, then left out of one epoch's
/// assignment (only another partition had new records), is fetched again when it has records
/// later. librdkafka keeps a partition's pause across assignments, so the source must resume
/// every partition it assigns; it used to resume only those of the epoch that followed the
/// pause, and the later epoch waited for records that never came (the flaky broker test).
#[test]
fn a_partition_paused_and_reassigned_later_is_read() -> Result<(), TestError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("grow", 2, 1)?;
    let servers = cluster.bootstrap_servers();
    let declared = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
    ]));
    let options = weir_engine::options::Options::new(
        [
            ("topic", "grow"),
            ("bootstrap.servers", servers.as_str()),
            ("broker_timeout", "5 seconds"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let args = weir_engine::source::SourceArgs {
        pipeline: "p",
        source: "grow",
    };
    let mut source =
        weir_engine::source::SourceRegistry::builtin().build(args, "kafka", options, &declared)?;
    let mut epoch = |expected: Option<usize>| -> Result<(), TestError> {
        let range = source.plan_next(false)?;
        assert_eq!(range.is_some(), expected.is_some(), "{range:?}");
        if let (Some(range), Some(n)) = (range, expected) {
            let read = source.read(&range)?;
            assert_eq!(read.len(), n, "{range}");
            source.advance(&range)?;
            source.committed(&range)?;
        }
        Ok(())
    };
    produce_to_partition(&servers, "grow", 0, 5)?;
    epoch(Some(5))?;
    epoch(None)?; // caught up: fetching pauses
    produce_to_partition(&servers, "grow", 1, 3)?;
    epoch(Some(3))?; // partition 1 alone
    produce_to_partition(&servers, "grow", 0, 4)?;
    epoch(Some(4))?; // partition 0 again, still paused in librdkafka before the fix
    Ok(())
}
