//! An update-mode table written to Kafka (against the real broker `scripts/test.sh` starts):
//! every changed window is sent keyed by its window and group keys, so the last message of each
//! key (what a compacted topic keeps) equals the Delta table of the same query.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::collections::BTreeMap;

use common::{
    assert_success, create_topic, kafka_broker, pipeline_on_example_source, query_lines,
    read_messages, unique_topic, weir,
};

#[test]
fn update_mode_messages_keyed_by_window_hold_the_latest_value_per_key() {
    let Some(servers) = kafka_broker("update_mode_messages_keyed_by_window") else {
        return;
    };
    let topic = unique_topic("revenue-updates");
    create_topic(&servers, &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    let window = "SELECT window_start, window_end, category, count(*) AS n \
                  FROM TUMBLE(events, event_time, INTERVAL '5 minutes') \
                  GROUP BY window_start, window_end, category";
    pipeline_on_example_source(
        &p,
        &format!(
            "CREATE TABLE gold.by_category WITH (output_mode = 'update') AS {window};
             CREATE TABLE by_category_kafka WITH (connector = 'kafka', topic = '{topic}',
                 bootstrap.servers = '{servers}', output_mode = 'update') AS {window};"
        ),
    );
    let out = weir()
        .arg("run")
        .arg(&p)
        .args(["--once", "--drain", "--progress", "quiet", "--lake"])
        .arg(dir.path().join("lake"))
        .envs([("EVENTS", "20000"), ("EVENTS_PER_TRIGGER", "2500")])
        .output()
        .unwrap();
    assert_success(&out, "weir run");

    let delta_line = query_lines(
        &dir.path().join("lake"),
        "SELECT concat(count(*), '|', sum(n)) AS line FROM gold.by_category",
    )
    .remove(0);
    let expected_rows: usize = delta_line.split('|').next().unwrap().parse().unwrap();

    // Updates outnumber rows: a window's count is sent again each epoch it changes.
    let messages = read_messages(&servers, &topic, expected_rows);
    assert!(
        messages.len() > expected_rows,
        "{} messages",
        messages.len()
    );
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for (key, payload) in messages {
        let key = key.expect("every message has the window and group keys as its key");
        let key_json: serde_json::Value = serde_json::from_str(&key).unwrap();
        assert!(key_json.get("window_start").is_some() && key_json.get("category").is_some());
        let row: serde_json::Value = serde_json::from_str(&payload).unwrap();
        latest.insert(key, row["n"].as_i64().unwrap());
    }
    let kafka_line = format!("{}|{}", latest.len(), latest.values().sum::<i64>());
    assert_eq!(kafka_line, delta_line);
    // The topic is left to the broker's folder, which scripts/test.sh removes: deleting a
    // topic while the crash tests read theirs made Tansu 0.6 answer "unknown topic" for theirs
    // in one CI run.
}
