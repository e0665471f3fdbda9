//! `weir produce` sends generated events or a file's lines to a topic (checked against
//! librdkafka's in-process mock cluster).

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;

/// Reads up to `expected` messages of `topic` from the start (waiting at most 30 s).
fn read_messages(
    servers: &str,
    topic: &str,
    expected: usize,
) -> Result<Vec<String>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("check-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    Ok(out)
}

#[test]
fn produce_sends_generated_events_and_file_lines() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 2, 1).unwrap();
    cluster.create_topic("lines", 1, 1).unwrap();
    let servers = cluster.bootstrap_servers();
    let weir = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    weir(&[
        "produce",
        "--topic",
        "events",
        "--bootstrap",
        &servers,
        "--from-generator",
        "ecommerce",
        "--events",
        "500",
    ]);
    let events = read_messages(&servers, "events", 500).unwrap();
    assert_eq!(events.len(), 500);
    assert!(events.iter().filter(|e| e.contains("\"event_id\"")).count() > 490);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap();
    weir(&[
        "produce",
        "--topic",
        "lines",
        "--bootstrap",
        &servers,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        read_messages(&servers, "lines", 3).unwrap(),
        vec!["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]
    );
}
