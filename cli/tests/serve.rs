//! `weir serve` with the commands that talk to it: a pipeline submitted, watched, queried,
//! the server stopped and started again (the pipeline resumes from its checkpoint: nothing
//! lost or written twice), a pipeline stopped on request staying stopped, mistakes refused
//! with their position, and the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::{client, free_port, json, metric_value, state_of, Server};
use common::{assert_success, pipeline_on_example_source, weir};

/// `weir serve` on `port` with `events` generated events for the example source.
fn start_server(dir: &Path, port: u16, events: u64) -> Server {
    Server::start(
        dir,
        port,
        &[
            ("EVENTS", &events.to_string()),
            ("EVENTS_PER_TRIGGER", "500"),
        ],
    )
}

/// `count(*)` of bronze.events through the server.
fn bronze_rows(port: u16) -> Option<u64> {
    let out = client(
        port,
        &["query", "--json", "SELECT count(*) AS n FROM bronze.events"],
    );
    if !out.status.success() {
        return None;
    }
    json(&out)["rows"][0]["n"].as_u64()
}

/// Waits until bronze holds the same number of rows twice, 3 s apart, and returns it.
fn settled_rows(port: u16) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while Instant::now() < deadline {
        let now = bronze_rows(port);
        if now.is_some() && now == last {
            return now.unwrap_or_default();
        }
        last = now;
        std::thread::sleep(Duration::from_secs(3));
    }
    panic!("bronze.events did not settle (last count {last:?})");
}

#[test]
fn a_submitted_pipeline_runs_resumes_after_a_server_restart_and_stays_stopped_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("shop");
    pipeline_on_example_source(
        &pipeline,
        "CREATE TABLE bronze.events AS SELECT event_id, event_type, amount, event_time FROM events;",
    );
    let port = free_port();
    let server = start_server(dir.path(), port, 3000);

    // Submitted, it runs: 3,000 events less the generator's malformed ones.
    let out = client(port, &["submit"]);
    assert!(
        !out.status.success(),
        "submit without a pipeline was accepted"
    );
    assert_success(
        &client(port, &["submit", pipeline.to_str().unwrap()]),
        "weir submit",
    );
    let first = settled_rows(port);
    assert!((2990..3000).contains(&first), "{first} rows");
    let shown = json(&client(port, &["show", "shop", "--json"]));
    // The example's generator ends after its events: the run is over, not failed.
    assert_eq!(shown["pipeline"]["state"], "finished", "{shown}");
    assert!(shown["pipeline"]["epoch"].as_u64().unwrap() >= 5, "{shown}");
    assert!(!shown["progress"].as_array().unwrap().is_empty(), "{shown}");
    let listed = String::from_utf8_lossy(&client(port, &["list"]).stdout).into_owned();
    assert!(
        listed.contains("shop") && listed.contains("finished"),
        "{listed}"
    );

    // Mistakes come back with their file:line:col; writes through the query route are refused.
    std::fs::write(
        dir.path().join("broken.sql"),
        "CREATE TABLE t AS\nSELECT amout FROM events;",
    )
    .unwrap();
    std::fs::copy(
        common::repo().join("examples/ecommerce/01_sources.sql"),
        dir.path().join("a_sources.sql"),
    )
    .unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::rename(dir.path().join("a_sources.sql"), bad.join("01_sources.sql")).unwrap();
    std::fs::rename(dir.path().join("broken.sql"), bad.join("02_broken.sql")).unwrap();
    let out = client(port, &["submit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("02_broken.sql:2:8") && err.contains("amout"),
        "{err}"
    );
    // A table written outside the server's lake is refused at submission, with its place.
    let outside = dir.path().join("outside");
    pipeline_on_example_source(
        &outside,
        &format!(
            "CREATE TABLE escaped WITH (path = '{}', allow_outside_lake = true)\n\
             AS SELECT event_id FROM events;",
            dir.path().join("escaped").display()
        ),
    );
    let out = client(port, &["submit", outside.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("02_tables.sql:1:") && err.contains("outside the server's lake"),
        "{err}"
    );
    assert!(!dir.path().join("escaped").exists());
    let out = client(
        port,
        &["query", "COPY (SELECT 1) TO '/tmp/weir-serve-copy.csv'"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    // Without the token: 401.
    let out = weir()
        .args(["list", "--server", &format!("http://127.0.0.1:{port}")])
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));

    // The server stops and starts again with 3,000 more events: the pipeline resumes from
    // its checkpoint and bronze ends as one uninterrupted run of 6,000 would.
    server.stop();
    let server = start_server(dir.path(), port, 6000);
    let resumed = settled_rows(port);
    let reference = dir.path().join("reference");
    let out = weir()
        .arg("run")
        .arg(&pipeline)
        .args(["--once", "--progress", "quiet", "--lake"])
        .arg(&reference)
        .envs([("EVENTS", "6000"), ("EVENTS_PER_TRIGGER", "500")])
        .output()
        .unwrap();
    assert_success(&out, "the uninterrupted run");
    let expected = common::query_lines(&reference, "SELECT count(*) AS n FROM bronze.events");
    assert_eq!(resumed.to_string(), expected[0]);

    // Stopped on request, it stays stopped across a server restart, until restarted.
    assert_success(&client(port, &["stop", "shop"]), "weir stop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_of(port, "shop") != "stopped" {
        assert!(Instant::now() < deadline, "the pipeline did not stop");
        std::thread::sleep(Duration::from_millis(300));
    }
    server.stop();
    let server = start_server(dir.path(), port, 6000);
    assert_eq!(state_of(port, "shop"), "stopped");
    assert_success(&client(port, &["restart", "shop"]), "weir restart");
    assert_ne!(state_of(port, "shop"), "stopped");
    server.stop();

    // No server: one line saying how to start one.
    let out = client(free_port(), &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start one with `weir serve`"));
}

#[test]
fn a_server_on_another_address_than_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir()
        .args([
            "serve",
            "--addr",
            &format!("0.0.0.0:{}", free_port()),
            "--state",
        ])
        .arg(dir.path().join("state"))
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
}

#[test]
fn weir_run_serves_its_metrics_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("shop");
    pipeline_on_example_source(
        &pipeline,
        "CREATE TABLE bronze.events AS SELECT event_id, amount, event_time FROM events;",
    );
    let (mut run, port) = common::server::run_with_metrics(
        &pipeline,
        &dir.path().join("lake"),
        &[("EVENTS", "6000"), ("EVENTS_PER_TRIGGER", "500")],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        assert!(
            Instant::now() < deadline,
            "no metrics of two epochs within 120 s"
        );
        if let Some(text) = common::server::scrape_metrics(port) {
            if metric_value(&text, "weir_epochs_total{").is_some_and(|epochs| epochs >= 2.0) {
                break text;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = run.kill();
    let _ = run.wait();
    for series in [
        "# TYPE weir_source_records_total counter",
        "weir_source_records_total{pipeline=\"shop\",source=\"events\"}",
        "weir_table_rows_total{pipeline=\"shop\",table=\"bronze.events\"}",
        "weir_epoch_duration_seconds_count{pipeline=\"shop\"}",
        "weir_watermark_delay_seconds{pipeline=\"shop\"}",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // Every epoch so far read 500 records.
    let read = metric_value(&text, "weir_source_records_total{").unwrap();
    assert!(read >= 1000.0 && read % 500.0 == 0.0, "{text}");
}
