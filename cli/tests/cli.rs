//! The `weir` binary as a user runs it: exit codes, messages, and the files connector.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env("WEIR_LOG", "warn")
        .output()
        .expect("weir runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PIPELINE: &str = "\
CREATE SOURCE orders (
    id     BIGINT NOT NULL,
    amount DOUBLE,
    ts     TIMESTAMP
) WITH (connector = 'files', path = 'incoming', format = 'json', max_files_per_trigger = 1);

CREATE TABLE raw.orders AS SELECT *, _file, _line FROM orders;
CREATE TABLE big_orders AS SELECT id, amount * 2 AS doubled FROM orders WHERE amount > 10;
";

/// A temporary folder holding `PIPELINE` as `p.sql` and `json` as its one input file
/// (`incoming/a.json`).
fn files_pipeline(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incoming")).unwrap();
    std::fs::write(dir.path().join("incoming/a.json"), json).unwrap();
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    dir
}

#[test]
fn files_pipeline_runs_once_and_resumes_with_new_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(dir.path().join("orders.sql"), PIPELINE).unwrap();
    std::fs::write(incoming.join("a.json"), "{\"id\":1,\"amount\":5,\"ts\":\"2024-03-01T00:00:02.455Z\"}\n{\"id\":2,\"amount\":50,\"ts\":1709251202455}\n").unwrap();
    std::fs::write(
        incoming.join("b.json"),
        "{\"id\":3,\"amount\":70}\n{\"id\":\"x\"}\n{\"amount\":1}\n",
    )
    .unwrap();

    let out = weir(&["run", "orders.sql", "--once"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("epoch    1"), "{log}");
    assert!(log.contains("epoch    2"), "one file per epoch: {log}");
    // Not a terminal: one short status line per epoch, no escape codes.
    assert!(!log.contains('\x1b'), "{log}");
    for line in log.lines().filter(|l| l.starts_with("epoch")) {
        assert!(
            line.len() < 160 && !line.contains(" +"),
            "a status line: {line}"
        );
    }

    let q = weir(
        &[
            "query",
            "SELECT id, _file, _line FROM raw.orders ORDER BY id",
        ],
        dir.path(),
    );
    let table = text(&q.stdout);
    assert!(q.status.success(), "{}", text(&q.stderr));
    assert!(table.contains("| 3  | b.json | 1     |"), "{table}");
    let dead = weir(
        &[
            "query",
            "SELECT position FROM _dead_letter.orders ORDER BY position",
        ],
        dir.path(),
    );
    let dead = text(&dead.stdout);
    assert!(dead.contains("_file=b.json _line=2"), "{dead}");
    // `weir tables`: rows, Delta version and the last epoch of each table.
    let listed = text(&weir(&["tables"], dir.path()).stdout);
    let raw = listed
        .lines()
        .find(|l| l.starts_with("raw.orders"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        raw.as_deref(),
        Some("raw.orders 3 2 2 (orders)"),
        "{listed}"
    );
    assert!(dead.contains("_file=b.json _line=3"), "{dead}");

    // A new file arrives; a second run reads only it (verbose: every table's rows).
    std::fs::write(incoming.join("c.json"), "{\"id\":4,\"amount\":11}\n").unwrap();
    let again = weir(
        &["run", "orders.sql", "--once", "--progress", "verbose"],
        dir.path(),
    );
    let log = text(&again.stderr);
    assert!(
        log.contains("epoch    3") && !log.contains("epoch    4"),
        "{log}"
    );
    assert!(log.contains("big_orders +1"), "{log}");
    let q = weir(
        &[
            "query",
            "SELECT count(*) AS n, sum(doubled) AS s FROM big_orders",
        ],
        dir.path(),
    );
    let table = text(&q.stdout);
    assert!(table.contains("| 3 | 262.0 |"), "{table}");
}

#[test]
fn bad_pipeline_exits_2_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.sql"), "CREATE SOURCE s (a TEXT) WITH (connector = 'generator');\nCREATE TABLE t AS SELECT b FROM s;\n").unwrap();
    let out = weir(&["validate", "bad.sql"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("bad.sql:2:26: error:"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn validate_and_explain_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = weir(&["validate", "examples/ecommerce"], &root);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 source(s), 15 table(s), 7 view(s), 2 reference table(s)"));
    let out = weir(&["explain", "examples/ecommerce"], &root);
    let plan = text(&out.stdout);
    assert!(plan.contains("silver.events <- [bronze.events] -> delta table 'silver/events' partitioned by event_date"), "{plan}");
    assert!(plan.contains("physical plan:"), "{plan}");
}

#[test]
fn changed_query_schema_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{\"id\":1,\"v\":2}\n").unwrap();
    let source = "CREATE SOURCE s (id BIGINT, v DOUBLE) WITH (connector = 'files', path = 'in');\n";
    std::fs::write(
        dir.path().join("p.sql"),
        format!("{source}CREATE TABLE t AS SELECT id, v FROM s;\n"),
    )
    .unwrap();
    assert!(weir(&["run", "p.sql", "--once"], dir.path())
        .status
        .success());

    std::fs::write(
        dir.path().join("p.sql"),
        format!("{source}CREATE TABLE t AS SELECT id, 1 AS extra FROM s;\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("in/b.json"), "{\"id\":2,\"v\":3}\n").unwrap();
    let out = weir(&["run", "p.sql", "--once"], dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("exists with columns (id Int64, v Float64)"),
        "{err}"
    );
    assert!(
        err.contains("now produces columns (id Int64, extra Int64)"),
        "{err}"
    );
    assert!(!err.contains("epoch "), "refused before reading: {err}");
}

#[test]
fn status_reports_epoch_watermark_positions_and_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("incoming")).unwrap();
    std::fs::write(
        dir.path().join("incoming/a.json"),
        "{\"k\":\"a\",\"ts\":\"2024-03-01T00:00:01Z\"}\n{\"k\":\"b\",\"ts\":\"2024-03-01T00:05:01Z\"}\nnot json\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE clicks (k TEXT, ts TIMESTAMP NOT NULL,
             WATERMARK FOR ts AS ts - INTERVAL '1 minute')
         WITH (connector = 'files', path = 'incoming');
         CREATE TABLE per_minute AS SELECT window_start, window_end, k, count(*) AS n
         FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k;",
    )
    .unwrap();
    let none = weir(&["status", "p.sql"], dir.path());
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("has not run"),
        "{}",
        text(&none.stderr)
    );

    assert!(weir(&["run", "p.sql", "--once"], dir.path())
        .status
        .success());
    let out = weir(&["status", "p.sql"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("last epoch 1 committed at"), "{report}");
    assert!(
        report.contains("watermark  2024-03-01T00:04:01+00:00 (for the next epoch)"),
        "{report}"
    );
    assert!(
        report.contains("clicks: 3 records read, 1 dead-lettered"),
        "{report}"
    );
    assert!(report.contains("\"files\":[\"a.json\"]"), "{report}");
    assert!(report.contains("per_minute: 2 rows held"), "{report}");
}

/// `weir` with stdout and stderr going to pipes whose readers are already gone (as with
/// `| head -0`): no command panics, and each does its work (a run still commits).
fn weir_into_closed_pipes(args: &[&str], dir: &Path) -> Output {
    let (out_reader, out_writer) = std::io::pipe().unwrap();
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    drop(out_reader);
    drop(err_reader);
    let status = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .env("WEIR_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(out_writer)
        .stderr(err_writer)
        .status()
        .expect("weir runs");
    Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    }
}

#[test]
fn no_command_panics_on_a_closed_pipe() {
    let dir = files_pipeline("{\"id\":1,\"amount\":20,\"ts\":\"2024-03-01T00:00:01Z\"}\n");
    let run = weir_into_closed_pipes(&["run", "p.sql", "--once"], dir.path());
    assert!(run.status.success(), "weir run: {}", run.status);
    assert!(dir.path().join("lake/big_orders/_delta_log").is_dir());
    for args in [
        &["status", "p.sql"][..],
        &["validate", "p.sql"],
        &["explain", "p.sql"],
        &["query", "SELECT * FROM big_orders"],
        &["run", "p.sql", "--once", "--progress", "json"],
    ] {
        let out = weir_into_closed_pipes(args, dir.path());
        assert!(out.status.success(), "weir {args:?}: {}", out.status);
    }
}

/// `weir validate .` names the pipeline after the folder, not `pipeline`.
#[test]
fn a_pipeline_given_as_dot_is_named_after_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("orders_job");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("p.sql"), PIPELINE).unwrap();
    let out = weir(&["validate", "."], &folder);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pipeline `orders_job`"),
        "{}",
        text(&out.stdout)
    );
}

/// `weir query` runs EXISTS wherever SQL allows it: in WHERE (a semi join) and in the SELECT
/// list (which DataFusion alone cannot run).
#[test]
fn query_runs_exists_in_where_and_in_select_lists() {
    let dir = files_pipeline("{\"id\":1,\"amount\":20}\n{\"id\":2,\"amount\":5}\n");
    assert!(weir(&["run", "p.sql", "--once"], dir.path())
        .status
        .success());
    let out = weir(
        &[
            "query",
            "SELECT o.id, EXISTS (SELECT 1 FROM big_orders AS b WHERE b.id = o.id) AS big, \
             NOT EXISTS (SELECT 1 FROM big_orders AS b WHERE b.id = o.id) AS small \
             FROM raw.orders AS o WHERE EXISTS (SELECT 1 FROM raw.orders AS r WHERE r.id = o.id) \
             ORDER BY o.id",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("| 1  | true  | false |"), "{table}");
    assert!(table.contains("| 2  | false | true  |"), "{table}");
}

/// An update-mode table says how many rows each run merged and how many of them were new, and
/// the MERGE logs no warning every epoch.
#[test]
fn update_mode_reports_merged_and_new_rows_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incoming")).unwrap();
    let write = |name: &str, lines: &[&str]| {
        std::fs::write(dir.path().join("incoming").join(name), lines.join("\n")).unwrap();
    };
    write(
        "a.json",
        &[
            "{\"k\":\"a\",\"ts\":\"2024-03-01T00:00:01Z\"}",
            "{\"k\":\"b\",\"ts\":\"2024-03-01T00:00:02Z\"}",
        ],
    );
    write(
        "b.json",
        &[
            "{\"k\":\"a\",\"ts\":\"2024-03-01T00:00:03Z\"}",
            "{\"k\":\"c\",\"ts\":\"2024-03-01T00:00:04Z\"}",
        ],
    );
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE SOURCE clicks (k TEXT, ts TIMESTAMP NOT NULL,
             WATERMARK FOR ts AS ts - INTERVAL '1 minute')
         WITH (connector = 'files', path = 'incoming', max_files_per_trigger = 1);
         CREATE TABLE per_minute WITH (output_mode = 'update') AS
         SELECT window_start, window_end, k, count(*) AS n
         FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k;",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.sql", "--once"])
        .current_dir(dir.path())
        .env_remove("WEIR_LOG")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Epoch 1 inserts (a), (b); epoch 2 updates (a) and inserts (c).
    assert!(err.contains("per_minute: 4 rows merged (3 new)"), "{err}");
    assert!(!err.contains("WARN"), "{err}");
}

/// A second `weir run` of a pipeline that is running is refused at start, naming the process
/// that runs it; once that process dies (even by SIGKILL) the lock is gone and a run starts.
#[test]
fn a_second_run_of_a_running_pipeline_is_refused() {
    let dir = files_pipeline("{\"id\":1,\"amount\":20}\n");
    let mut first = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.sql", "--progress", "quiet"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join("lake/_checkpoints/p/run.lock");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the first run took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let second = weir(&["run", "p.sql", "--once"], dir.path());
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("another `weir run` (PID {})", first.id())),
        "{err}"
    );
    first.kill().unwrap(); // SIGKILL: the lock must not outlive the process
    first.wait().unwrap();
    let third = weir(&["run", "p.sql", "--once"], dir.path());
    assert!(third.status.success(), "{}", text(&third.stderr));
}

/// `weir query` is read-only: statements that would write (COPY, INSERT, CREATE EXTERNAL TABLE,
/// EXPLAIN ANALYZE of an INSERT) are refused with exit 2 and change nothing; SELECT, EXPLAIN,
/// SHOW TABLES and DESCRIBE work.
#[test]
fn query_is_read_only() {
    let dir = files_pipeline("{\"id\":1,\"amount\":20}\n");
    assert!(weir(&["run", "p.sql", "--once"], dir.path())
        .status
        .success());
    let copy_to = dir.path().join("copied.csv");
    for statement in [
        format!("COPY big_orders TO '{}'", copy_to.display()),
        "INSERT INTO big_orders VALUES (9, 9.0)".to_string(),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/hostname'".to_string(),
        "EXPLAIN ANALYZE INSERT INTO big_orders VALUES (9, 9.0)".to_string(),
    ] {
        let out = weir(&["query", &statement], dir.path());
        assert_eq!(out.status.code(), Some(2), "{statement}");
        assert!(
            text(&out.stderr).contains("weir query is read-only"),
            "{statement}"
        );
    }
    assert!(!copy_to.exists());
    let count = weir(
        &["query", "SELECT count(*) AS n FROM big_orders"],
        dir.path(),
    );
    assert!(
        text(&count.stdout).contains("| 1 |"),
        "{}",
        text(&count.stdout)
    );
    for statement in [
        "SHOW TABLES",
        "DESCRIBE big_orders",
        "EXPLAIN SELECT * FROM big_orders",
    ] {
        let out = weir(&["query", statement], dir.path());
        assert!(out.status.success(), "{statement}: {}", text(&out.stderr));
    }
    let tables = weir(&["query", "SHOW TABLES"], dir.path());
    assert!(text(&tables.stdout).contains("big_orders"));
}

/// SIGTERM, as systemd, Kubernetes and `docker stop` send it, finishes the current epoch and
/// exits 0 with the epochs committed, like Ctrl-C.
#[test]
fn sigterm_finishes_the_epoch_and_exits_cleanly() {
    let dir = files_pipeline("{\"id\":1,\"amount\":20}\n");
    let run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.sql", "--progress", "quiet"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let committed = dir.path().join("lake/_checkpoints/p/commits/1");
    let started = std::time::Instant::now();
    while !committed.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no epoch committed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = run.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("stopping after the current epoch"), "{err}");
    assert!(err.contains("big_orders: +1 rows"), "{err}");
}

/// Names ending in `.json` that are not regular files (a folder, a FIFO, a dangling symlink)
/// are skipped with a warning; the run reads the real files and finishes.
#[test]
fn files_that_are_not_regular_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(incoming.join("a.json"), "{\"id\":1,\"amount\":20}\n").unwrap();
    std::fs::create_dir(incoming.join("folder.json")).unwrap();
    std::os::unix::fs::symlink(incoming.join("missing"), incoming.join("dangling.json")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(incoming.join("pipe.json"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    let out = weir(&["run", "p.sql", "--once"], dir.path());
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("not a regular file").count(), 3, "{err}");
    assert!(err.contains("big_orders: +1 rows"), "{err}");
}

/// A run that stops in an epoch leaves the failure for `weir status` (which epoch, why, what
/// to do) until an epoch commits.
#[test]
fn status_says_which_epoch_failed_why_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("incoming")).unwrap();
    std::fs::write(
        dir.path().join("incoming/a.json"),
        "{\"k\":\"a\",\"n\":\"1\",\"ts\":\"2024-03-01T00:00:00Z\"}\n\
         {\"k\":\"a\",\"n\":\"x\",\"ts\":\"2024-03-01T00:00:01Z\"}\n",
    )
    .unwrap();
    let sql = |cast: &str| {
        format!(
            "CREATE SOURCE ev (k TEXT, n TEXT, ts TIMESTAMP,
                 WATERMARK FOR ts AS ts - INTERVAL '1 minute')
             WITH (connector = 'files', path = 'incoming', settle_time = '0s');
             CREATE TABLE t AS SELECT window_start, k, sum({cast}(n AS INT)) AS total
             FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start, window_end, k;"
        )
    };
    std::fs::write(dir.path().join("p.sql"), sql("CAST")).unwrap();
    let failed = weir(&["run", "p.sql", "--once"], dir.path());
    assert!(!failed.status.success());
    let status = weir(&["status", "p.sql"], dir.path());
    let out = text(&status.stdout);
    assert!(out.contains("FAILED     epoch 1 at "), "{out}");
    assert!(out.contains("TRY_CAST"), "{out}");

    std::fs::write(dir.path().join("p.sql"), sql("TRY_CAST")).unwrap();
    let fixed = weir(&["run", "p.sql", "--once"], dir.path());
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
    let out = text(&weir(&["status", "p.sql"], dir.path()).stdout);
    assert!(!out.contains("FAILED"), "{out}");
    assert!(out.contains("last epoch 1 committed"), "{out}");
}
