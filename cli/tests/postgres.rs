//! The PostgreSQL sink against a real server (`scripts/postgres.sh`): the rows psql sees equal
//! the Delta table of the same query, through a crash between the sinks' commits and Weir's
//! commit log (the replay is skipped by the commit table), with upserts in update mode, a
//! server stopped and restarted mid-run, a table whose columns do not fit, and a password that
//! never appears in what Weir prints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::postgres::PgServer;
use common::{assert_success, pipeline_on_example_source, query, query_lines, weir, KillDelays};

/// A pipeline writing the same two queries to Delta and to PostgreSQL: raw events appended,
/// and revenue per minute in update mode (upserted on the window).
fn write_pipeline(dir: &Path) {
    pipeline_on_example_source(
        dir,
        "CREATE TABLE bronze.events AS
         SELECT event_id, event_type, user_id, amount, event_time FROM events;
         CREATE TABLE bronze_pg WITH (connector = 'postgres', url = '${PG_URL}',
                                      table = 'public.events') AS
         SELECT event_id, event_type, user_id, amount, event_time FROM events;
         CREATE TABLE gold.revenue WITH (output_mode = 'update') AS
         SELECT window_start, window_end, count(*) AS n, sum(amount) AS revenue
         FROM TUMBLE(events, event_time, INTERVAL '1 minute') GROUP BY window_start, window_end;
         CREATE TABLE revenue_pg WITH (connector = 'postgres', url = '${PG_URL}',
                                       table = 'gold.revenue_minute', output_mode = 'update') AS
         SELECT window_start, window_end, count(*) AS n, sum(amount) AS revenue
         FROM TUMBLE(events, event_time, INTERVAL '1 minute') GROUP BY window_start, window_end;",
    );
}

fn run(dir: &Path, pg: &PgServer, events: &str) -> Command {
    let mut cmd = weir();
    cmd.arg("run")
        .arg(dir.join("p"))
        .args(["--once", "--drain", "--progress", "verbose", "--lake"])
        .arg(dir.join("lake"))
        .env("PG_URL", &pg.url)
        .envs([("EVENTS", events), ("EVENTS_PER_TRIGGER", "2000")]);
    cmd
}

/// Both ends hold the same rows: events by id, and revenue per minute.
fn assert_postgres_equals_delta(dir: &Path, pg: &PgServer) {
    let lake = dir.join("lake");
    let delta_events = query_lines(
        &lake,
        "SELECT concat(count(*), '|', count(DISTINCT event_id), '|', \
         CAST(round(sum(amount) * 100) AS BIGINT)) AS line FROM bronze.events",
    );
    let pg_events = pg.psql(
        "SELECT count(*) || '|' || count(DISTINCT event_id) || '|' || \
         round(sum(amount)::numeric * 100)::bigint FROM public.events",
    );
    assert_eq!(delta_events, vec![pg_events.clone()], "events");
    let rows: u64 = pg_events.split('|').next().unwrap().parse().unwrap();
    assert!(rows > 3000, "{pg_events}");
    let delta_windows = query_lines(
        &lake,
        "SELECT concat(CAST(date_part('epoch', window_start) AS BIGINT), '|', n, '|', \
         CAST(round(revenue * 100) AS BIGINT)) AS line FROM gold.revenue ORDER BY line",
    );
    let mut pg_windows: Vec<String> = pg
        .psql(
            "SELECT extract(epoch FROM window_start)::bigint || '|' || n || '|' || \
             round(revenue::numeric * 100)::bigint FROM gold.revenue_minute",
        )
        .lines()
        .map(str::to_string)
        .collect();
    pg_windows.sort();
    let mut delta_sorted = delta_windows.clone();
    delta_sorted.sort();
    assert!(delta_sorted.len() > 20, "{delta_sorted:?}");
    assert_eq!(delta_sorted, pg_windows, "revenue per minute");
}

fn assert_no_password(out: &Output, pg: &PgServer) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(&pg.password),
        "the password was printed:\n{printed}"
    );
}

#[test]
fn a_replayed_epoch_is_skipped_and_postgres_equals_delta() {
    let Some(pg) = PgServer::start("a_replayed_epoch_is_skipped_and_postgres_equals_delta") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(&dir.path().join("p"));

    // Every sink commits epoch 3, then the process dies before Weir's commit log has it.
    let crashed = run(dir.path(), &pg, "40000")
        .env("WEIR_CRASH_AT", "sinks-committed@3")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run was to abort");
    assert_eq!(
        pg.psql("SELECT epoch FROM gold._weir_commits WHERE table_name = 'gold.revenue_minute'"),
        "3"
    );
    let restarted = run(dir.path(), &pg, "40000").output().unwrap();
    assert_success(&restarted, "the restart");
    assert_no_password(&crashed, &pg);
    assert_no_password(&restarted, &pg);
    assert_postgres_equals_delta(dir.path(), &pg);

    let explain = weir()
        .arg("explain")
        .arg(dir.path().join("p"))
        .env("PG_URL", &pg.url)
        .output()
        .unwrap();
    assert_success(&explain, "weir explain");
    assert!(String::from_utf8_lossy(&explain.stdout)
        .contains("postgres table gold.revenue_minute on 127.0.0.1:"));
    assert_no_password(&explain, &pg);
}

#[test]
fn a_server_restarted_mid_run_is_waited_for_and_nothing_is_lost() {
    let Some(pg) = PgServer::start("a_server_restarted_mid_run_is_waited_for") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(&dir.path().join("p"));
    let child = run(dir.path(), &pg, "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once two epochs are in, the server goes away for two seconds.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = pg.try_psql("SELECT coalesce(max(epoch), 0) FROM gold._weir_commits");
        if committed.is_some_and(|e| e.parse::<u64>().unwrap_or(0) >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "no epoch committed within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    pg.restart();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "the run across the server restart");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("unreachable: waiting to write epoch"),
        "the run did not say it waited for the server:\n{log}"
    );
    assert_no_password(&out, &pg);
    assert_postgres_equals_delta(dir.path(), &pg);
}

#[test]
fn a_table_whose_columns_do_not_fit_is_refused_before_any_epoch() {
    let Some(pg) = PgServer::start("a_table_whose_columns_do_not_fit_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(&dir.path().join("p"));
    pg.psql(
        "CREATE TABLE public.events (event_id text, event_type text, user_id text, \
         amount integer, event_time timestamp)",
    );
    let out = run(dir.path(), &pg, "4000").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["public.events", "`amount`", "integer", "double precision"] {
        assert!(err.contains(part), "the error does not name {part}:\n{err}");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM public.events"), "0");
    assert_no_password(&out, &pg);

    pg.psql("DROP TABLE public.events; CREATE TABLE public.events (event_id text)");
    let out = run(dir.path(), &pg, "4000").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("public.events has no column `event_type`"),
        "missing column not named:\n{err}"
    );
}

#[test]
fn a_mistake_on_the_url_line_is_shown_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    write_pipeline(&p);
    std::fs::write(
        p.join("03_typo.sql"),
        "CREATE TABLE typo WITH (connector = 'postgres', url = '${PG_URL}', tabel = 't') AS\n\
         SELECT event_id FROM events;",
    )
    .unwrap();
    let out = weir()
        .arg("validate")
        .arg(&p)
        .env(
            "PG_URL",
            "postgres://weir:not-to-be-seen@127.0.0.1:5432/weir",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`tabel` is not an option"), "{err}");
    assert!(err.contains("postgres://weir:*"), "{err}");
    assert!(
        !err.contains("not-to-be-seen"),
        "the password was printed:\n{err}"
    );
}

#[test]
fn killed_at_random_moments_postgres_still_equals_delta() {
    const EVENTS: &str = "120000";
    let Some(pg) = PgServer::start("killed_at_random_moments_postgres_still_equals_delta") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(&dir.path().join("p"));
    let committed = || {
        pg.try_psql("SELECT coalesce(max(epoch), 0) FROM gold._weir_commits")
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // 120,000 events are 60 epochs of 2,000: a debug build commits 2–11 of them between a
    // start and a kill 0.6–3 s later (about 0.26 s an epoch here), so six kills leave input
    // for the last run. With 60,000 events three kills used it all up on a quiet machine.
    let mut delays = KillDelays::new(0x9e37, 600, 2400);
    let mut killed_after = Vec::new();
    // What each run did: killed after N committed epochs, or how it ended by itself.
    let mut runs = Vec::new();
    for _ in 0..40 {
        let now = committed();
        if killed_after.len() >= 6 && now >= 8 {
            break;
        }
        let delay = delays.next(now as usize);
        let log = dir.path().join("run.log");
        let mut child = run(dir.path(), &pg, EVENTS)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL: mid-COPY, mid-transaction or between commits
                child.wait().unwrap();
                let now = committed();
                killed_after.push(now);
                runs.push(format!("killed after {delay:?} at epoch {now}"));
            }
            Some(status) => {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(status.success(), "a run failed by itself: {status}\n{err}");
                // The input is used up: further runs would have nothing left to kill.
                runs.push(format!(
                    "ended by itself after {delay:?} at epoch {}",
                    committed()
                ));
                break;
            }
        }
    }
    let mut distinct = killed_after.clone();
    distinct.dedup();
    assert!(
        killed_after.len() >= 4 && distinct.len() >= 3,
        "runs were killed after {killed_after:?} committed epochs; lengthen the run. Runs:\n{}",
        runs.join("\n")
    );
    let last = run(dir.path(), &pg, EVENTS).output().unwrap();
    assert_success(&last, "the last restart");
    assert_postgres_equals_delta(dir.path(), &pg);
}

#[test]
fn a_postgres_reference_is_joined_at_the_version_each_epoch_logged() {
    let Some(pg) = PgServer::start("a_postgres_reference_is_joined_at_the_version") else {
        return;
    };
    pg.psql(
        "CREATE SCHEMA inv; CREATE TABLE inv.products (product_id text PRIMARY KEY, brand text); \
         INSERT INTO inv.products SELECT 'p' || lpad(i::text, 5, '0'), 'brand-' || (i % 7) \
         FROM generate_series(0, 4999) i",
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    pipeline_on_example_source(
        &p,
        "CREATE REFERENCE TABLE products WITH (connector = 'postgres', url = '${PG_URL}',
             table = 'inv.products', refresh = '0 seconds');
         CREATE TABLE enriched AS
         SELECT e.event_id, e.product_id, p.brand
         FROM events e JOIN products p ON e.product_id = p.product_id;",
    );
    let run = |lake: &str| {
        let mut cmd = weir();
        cmd.arg("run")
            .arg(&p)
            .args(["--once", "--progress", "quiet", "--lake"])
            .arg(dir.path().join(lake))
            .env("PG_URL", &pg.url)
            .envs([("EVENTS", "8000"), ("EVENTS_PER_TRIGGER", "2000")]);
        cmd
    };
    // `crashed` logs epoch 2 with the first version and dies; `steady` stops after epoch 2.
    let crashed = run("crashed")
        .env("WEIR_CRASH_AT", "offsets-logged@2")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the run was to abort");
    assert_success(
        &run("steady").args(["--max-epochs", "2"]).output().unwrap(),
        "the first two epochs",
    );
    // The inventory service renames every brand; both runs go on.
    pg.psql("UPDATE inv.products SET brand = 'renamed-' || brand");
    assert_success(&run("crashed").output().unwrap(), "the restart");
    assert_success(&run("steady").output().unwrap(), "the rest");
    common::assert_same_tables(
        &dir.path().join("steady"),
        &dir.path().join("crashed"),
        &["enriched"],
        1000,
    );
    let renamed = query(
        &dir.path().join("crashed"),
        "SELECT count(*) AS n FROM enriched WHERE brand LIKE 'renamed-%'",
    );
    assert!(
        !renamed.contains("| 0 "),
        "no epoch joined the new rows:\n{renamed}"
    );
}

/// Runs a pipeline writing 2,000 events to PostgreSQL at `url` (`--once --drain`), into the
/// table `public.<dir's name>`.
fn run_to_url(dir: &Path, url: &str) -> Output {
    let p = dir.join("p");
    let table = dir.file_name().unwrap().to_string_lossy();
    pipeline_on_example_source(
        &p,
        &format!(
            "CREATE TABLE events_pg WITH (connector = 'postgres', url = '${{PG_URL}}',
                                         table = 'public.{table}', server_timeout = '60 seconds') AS
             SELECT event_id, amount FROM events;"
        ),
    );
    weir()
        .arg("run")
        .arg(&p)
        .args(["--once", "--drain", "--progress", "quiet", "--lake"])
        .arg(dir.join("lake"))
        .env("PG_URL", url)
        .envs([("EVENTS", "2000"), ("EVENTS_PER_TRIGGER", "1000")])
        .output()
        .unwrap()
}

#[test]
fn tls_as_libpq_sslmode_says_and_an_untrusted_certificate_fails_at_once() {
    let Some(pg) = PgServer::start("tls_as_libpq_sslmode_says") else {
        return;
    };
    let ca = pg.require_tls();
    let dir = tempfile::tempdir().unwrap();
    // The server refuses plain connections, so each run that writes used TLS.
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        ca.display()
    );
    assert_success(&run_to_url(&dir.path().join("a"), &verified), "verify-full");
    let rows = |table: &str| -> u64 {
        pg.psql(&format!("SELECT count(*) FROM public.{table}"))
            .parse()
            .unwrap()
    };
    // 2,000 events less the generator's malformed ones.
    let one_run = rows("a");
    assert!((1990..=2000).contains(&one_run), "{one_run}");
    // `prefer` (the default) and `require` encrypt without checking the certificate.
    assert_success(
        &run_to_url(&dir.path().join("b"), &pg.url),
        "default sslmode",
    );
    let required = format!("{}?sslmode=require", pg.url);
    assert_success(&run_to_url(&dir.path().join("c"), &required), "require");
    assert_eq!((rows("b"), rows("c")), (one_run, one_run));

    // Without TLS the server says no; a certificate signed by another CA is refused at once.
    let plain = format!("{}?sslmode=disable", pg.url);
    let out = run_to_url(&dir.path().join("d"), &plain);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no encryption"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_ca = dir.path().join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert_success(&made, "openssl");
    let untrusted = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        pg.url,
        other_ca.display()
    );
    let started = Instant::now();
    let out = run_to_url(&dir.path().join("e"), &untrusted);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "an untrusted certificate was retried as if the server were away:\n{err}"
    );
    assert_no_password(&out, &pg);
    for table in ["d", "e"] {
        assert!(pg
            .try_psql(&format!("SELECT 1 FROM public.{table}"))
            .is_none());
    }
}
