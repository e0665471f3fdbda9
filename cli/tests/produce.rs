//! `weir produce` sends generated events or a file's lines to a topic (checked against
//! librdkafka's in-process mock cluster).

mod common;

use common::read_messages;
use rdkafka::mocking::MockCluster;

#[test]
fn produce_sends_generated_events_and_file_lines() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 2, 1).unwrap();
    cluster.create_topic("lines", 1, 1).unwrap();
    let servers = cluster.bootstrap_servers();
    let weir = |args: &[&str]| {
        let out = common::weir().args(args).output().unwrap();
        common::assert_success(&out, "weir produce");
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
    let events: Vec<String> = read_messages(&servers, "events", 500)
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
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
    let lines: Vec<String> = read_messages(&servers, "lines", 3)
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    assert_eq!(lines, vec!["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
}
