//! The README's walk through `weir serve`, end to end: `examples/ecommerce` submitted with
//! `weir submit`, watched on the live page in a real headless browser (Debian's chromium,
//! driven by Playwright from the venv of `scripts/python-env.sh`) and with `weir show` and
//! `/metrics`, queried with `weir query --server` (JSON and Arrow IPC), the server stopped and
//! started again in the middle of the run, and every table then equal to an uninterrupted
//! `weir run` over the same events: nothing lost, nothing written twice.
//!
//! Without chromium or the venv's Playwright the test skips on a developer's machine and fails
//! under CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::server::{client, free_port, http, json, state_of, Server, TOKEN};
use common::{assert_same_tables, assert_success, weir, ECOMMERCE_JOIN_TABLES, ECOMMERCE_TABLES};

/// The generator's events, and how many each epoch takes: 20 epochs, a second or more each.
const ENV: [(&str, &str); 2] = [("EVENTS", "20000"), ("EVENTS_PER_TRIGGER", "1000")];

/// The venv's Python (with Playwright, and chromium installed) and PostgreSQL's `psql`.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("WEIR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join(".venv/bin/python"));
    let has_playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    let bindir = std::process::Command::new("bash")
        .arg(common::repo().join("scripts/postgres.sh"))
        .arg("bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let psql = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim()).join("psql");
    (has_playwright && psql.exists() && Path::new("/usr/bin/chromium").exists())
        .then_some((python, psql))
}

/// `psql -At -c sql` against the server's PostgreSQL endpoint, the token as password.
fn psql(psql: &Path, port: u16, sql: &str) -> std::process::Output {
    psql_with_password(psql, port, sql, TOKEN)
}

fn psql_with_password(psql: &Path, port: u16, sql: &str, password: &str) -> std::process::Output {
    std::process::Command::new(psql)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "weir",
            "-d",
            "weir",
        ])
        .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap()
}

/// The lake through psql: refused without the token, then the same count as the HTTP query,
/// `\dt`, a grouped query, and a write refused as read only.
fn check_psql(psql_bin: &Path, port: u16, silver: u64) {
    let out = psql_with_password(psql_bin, port, "SELECT 1", "not-the-token");
    assert!(!out.status.success(), "psql without the token was let in");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql(psql_bin, port, "SELECT count(*) FROM silver.events");
    assert_success(&out, "psql count");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        silver.to_string()
    );
    let out = psql(psql_bin, port, "\\dt");
    assert_success(&out, "psql \\dt");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for table in [
        "silver|events|table",
        "gold|revenue_per_minute|table",
        "_dead_letter|events|table",
    ] {
        assert!(
            listed.contains(table),
            "\\dt does not list {table}:\n{listed}"
        );
    }
    let out = psql(
        psql_bin,
        port,
        "SELECT event_type, count(*) FROM silver.events GROUP BY 1 ORDER BY 1",
    );
    assert_success(&out, "psql group by");
    let grouped: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit('|').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(grouped, silver);
    let out = psql(
        psql_bin,
        port,
        "INSERT INTO silver.events SELECT * FROM silver.events",
    );
    assert!(!out.status.success(), "psql INSERT was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `name` has committed at least `epoch`.
fn wait_for_epoch(port: u16, name: &str, epoch: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let shown = json(&client(port, &["show", name, "--json"]));
        if shown["pipeline"]["epoch"].as_u64().unwrap_or(0) >= epoch {
            return;
        }
        assert_ne!(shown["pipeline"]["state"], "failed", "{shown}");
        assert!(
            Instant::now() < deadline,
            "epoch {epoch} not reached: {shown}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Opens the page in chromium and returns what it showed (see `tests/page/watch.py`).
fn watch_page(python: &Path, server: &Server, screenshot: &Path) -> serde_json::Value {
    let out = std::process::Command::new(python)
        .arg(common::repo().join("cli/tests/page/watch.py"))
        .args([&server.url(), "ecommerce"])
        .arg(screenshot)
        .args(["4", TOKEN])
        .output()
        .unwrap();
    assert_success(&out, "the page in chromium");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The page lists the pipeline, draws its graph, its charts move as epochs commit, it asked
/// for the token once, and nothing failed in the browser.
fn check_page(page: &serde_json::Value) {
    assert_eq!(page["listed"], serde_json::json!(["ecommerce"]), "{page}");
    let graph: Vec<&str> = page["graph"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for node in [
        "events",
        "bronze.events",
        "silver.events",
        "gold.revenue_per_minute",
    ] {
        assert!(graph.contains(&node), "{node} not drawn: {graph:?}");
    }
    assert!(
        page["edges"].as_u64().unwrap() >= graph.len() as u64 - 1,
        "{page}"
    );
    for chart in ["input", "processing", "duration", "state"] {
        let (before, after) = (
            &page["before"][format!("chart-{chart}")],
            &page["after"][format!("chart-{chart}")],
        );
        assert!(
            after["last_epoch"].as_i64() > before["last_epoch"].as_i64()
                && after["points"].as_u64() > before["points"].as_u64(),
            "chart {chart} did not move while epochs committed: {page}"
        );
    }
    assert_eq!(
        page["dialogs"], 1,
        "the page should ask for the token once: {page}"
    );
    assert_eq!(page["errors"], serde_json::json!([]), "{page}");
    assert_eq!(page["page_errors"], 0, "{page}");
}

/// `/metrics` holds the engine's series for the pipeline, in Prometheus text format.
fn check_metrics(port: u16) {
    let (status, body) = http(port, "GET", "/metrics", &[], "");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    for series in [
        "weir_source_records_total{pipeline=\"ecommerce\",source=\"events\"}",
        "weir_table_rows_total{pipeline=\"ecommerce\",table=\"bronze.events\"}",
        "weir_source_dead_letters_total{pipeline=\"ecommerce\",source=\"events\"}",
        "weir_epoch_duration_seconds_bucket{pipeline=\"ecommerce\",le=\"",
        "weir_commit_duration_seconds_bucket{pipeline=\"ecommerce\",table=\"silver.events\",le=\"",
        "weir_operator_state_bytes{pipeline=\"ecommerce\",operator=\"gold.revenue_per_minute\"}",
        "weir_operator_late_rows_total{pipeline=\"ecommerce\",operator=\"gold.revenue_per_minute\"}",
        "weir_watermark_delay_seconds{pipeline=\"ecommerce\"}",
        "weir_watermark_behind_max_event_time_seconds{pipeline=\"ecommerce\"}",
        "# TYPE weir_epoch_duration_seconds histogram",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics:\n{text}");
    }
    let without_token = common::server::scrape_metrics(port).unwrap();
    assert!(
        without_token.starts_with("HTTP/1.1 401"),
        "/metrics without the token: {without_token}"
    );
}

/// Queries through the server: JSON rows, the same count as an Arrow IPC stream, and every
/// statement that would write or read files refused.
fn check_queries(port: u16) -> u64 {
    let sql = "SELECT count(*) AS n FROM silver.events";
    let rows = json(&client(port, &["query", "--json", sql]))["rows"][0]["n"]
        .as_u64()
        .unwrap();
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (status, ipc) = http(
        port,
        "POST",
        "/api/query",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/vnd.apache.arrow.stream"),
        ],
        &body,
    );
    assert_eq!(status, 200);
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let counted = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(counted as u64, rows);
    // Writes are refused as such (exit 2); a file named as a table or read through a file
    // function is not found, since the query session has neither URL tables nor such functions.
    for (refused, expected) in [
        (
            "COPY (SELECT 1) TO '/tmp/weir-walkthrough.csv'",
            "read-only",
        ),
        (
            "INSERT INTO silver.events SELECT * FROM silver.events",
            "read-only",
        ),
        (
            "CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd'",
            "read-only",
        ),
        (
            "SELECT * FROM '/etc/passwd'",
            "table 'datafusion.public./etc/passwd' not found",
        ),
        (
            "SELECT * FROM read_csv('/etc/passwd')",
            "table function 'read_csv' not found",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "table function 'read_parquet' not found",
        ),
        (
            "SELECT * FROM read_json('/etc/passwd')",
            "table function 'read_json' not found",
        ),
    ] {
        let out = client(port, &["query", refused]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{refused} was not refused");
        assert!(err.contains(expected), "{refused}: {err}");
        assert!(!err.contains("root:"), "{refused} read the file: {err}");
    }
    assert!(!Path::new("/tmp/weir-walkthrough.csv").exists());
    rows
}

#[test]
fn a_new_user_serves_submits_watches_queries_and_restarts_the_ecommerce_example() {
    let Some((python, psql_bin)) = tools() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "walkthrough skipped in CI: install chromium and PostgreSQL, run scripts/python-env.sh"
        );
        eprintln!(
            "SKIPPED: needs /usr/bin/chromium, Playwright in the venv (scripts/python-env.sh) \
             and psql (scripts/postgres.sh install)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pg_port = free_port();
    let pg_addr = format!("127.0.0.1:{pg_port}");
    let server_args = ["--pg-addr", pg_addr.as_str()];
    let server = Server::start_with(dir.path(), free_port(), &ENV, &server_args);
    let port = server.port;
    assert_success(
        &client(port, &["submit", "examples/ecommerce"]),
        "weir submit",
    );
    wait_for_epoch(port, "ecommerce", 2);

    let screenshot = std::env::var_os("WEIR_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("page.png"));
    check_page(&watch_page(&python, &server, &screenshot));
    let shown = client(port, &["show", "ecommerce"]);
    assert_success(&shown, "weir show");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("pipeline ecommerce: running"), "{shown}");
    assert!(shown.contains("state held"), "{shown}");
    check_metrics(port);

    // Stopped in the middle of the run and started again, the server resumes the pipeline
    // from its checkpoint.
    let before_restart = json(&client(port, &["show", "ecommerce", "--json"]));
    server.stop();
    let server = Server::start_with(dir.path(), port, &ENV, &server_args);
    let deadline = Instant::now() + Duration::from_secs(300);
    while state_of(port, "ecommerce") != "finished" {
        assert!(
            Instant::now() < deadline,
            "the resumed pipeline did not finish"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let last_epoch = json(&client(port, &["show", "ecommerce", "--json"]))["pipeline"]["epoch"]
        .as_u64()
        .unwrap();
    assert!(
        last_epoch > before_restart["pipeline"]["epoch"].as_u64().unwrap(),
        "no epoch after the restart: {before_restart}"
    );
    let silver = check_queries(port);
    check_psql(&psql_bin, pg_port, silver);
    server.stop();

    let reference = dir.path().join("reference");
    let out = weir()
        .args([
            "run",
            "examples/ecommerce",
            "--once",
            "--progress",
            "quiet",
            "--lake",
        ])
        .arg(&reference)
        .envs(ENV)
        .output()
        .unwrap();
    assert_success(&out, "the uninterrupted run");
    let tables: Vec<&str> = ECOMMERCE_TABLES
        .iter()
        .chain(&ECOMMERCE_JOIN_TABLES)
        .copied()
        .collect();
    assert_same_tables(&reference, &dir.path().join("lake"), &tables, 1);
    let expected = common::query_lines(&reference, "SELECT count(*) FROM silver.events");
    assert_eq!(expected[0], silver.to_string());
}
