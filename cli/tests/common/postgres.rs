//! A real PostgreSQL server per test, started by `scripts/postgres.sh` in a temporary folder
//! on a port of its own and stopped (by its PID) when the test ends. Without an installed
//! server a test is skipped on a developer's machine and fails under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::repo;

/// A running server.
pub struct PgServer {
    dir: tempfile::TempDir,
    /// `postgres://weir:<password>@127.0.0.1:<port>/weir`.
    pub url: String,
    /// The generated password (tests check that it is never printed).
    pub password: String,
    bindir: PathBuf,
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/postgres.sh"))
        .args(args)
        .output()
        .unwrap()
}

impl PgServer {
    /// A fresh server for `test`, or `None` (skipped) when PostgreSQL is not installed.
    pub fn start(test: &str) -> Option<PgServer> {
        let bindir = script(&["bindir"]);
        if !bindir.status.success() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test} skipped in CI: no PostgreSQL server (scripts/postgres.sh install)"
            );
            eprintln!("skipping {test}: no PostgreSQL server (scripts/postgres.sh install)");
            return None;
        }
        let bindir = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        // Tests start servers in parallel: a port another one took in between is retried.
        let seed = test
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        for attempt in 0..5 {
            let port = 20000 + (seed + attempt * 7919 + std::process::id()) % 20000;
            let out = script(&["start", data.to_str().unwrap(), &port.to_string()]);
            if out.status.success() {
                let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let password = std::fs::read_to_string(data.join("password"))
                    .unwrap()
                    .trim()
                    .to_string();
                return Some(PgServer {
                    dir,
                    url,
                    password,
                    bindir,
                });
            }
            eprintln!(
                "postgres.sh start on port {port}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("{test}: PostgreSQL did not start on any of 5 ports");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// Stops the server (a fast shutdown, as an operator's restart does).
    pub fn stop(&self) {
        let out = script(&["stop", self.data().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&self) {
        let port = std::fs::read_to_string(self.data().join("port")).unwrap();
        let out = script(&["start", self.data().to_str().unwrap(), port.trim()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run_psql(&self, sql: &str) -> std::process::Output {
        Command::new(self.bindir.join("psql"))
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(&self.url)
            .output()
            .unwrap()
    }

    /// `psql -At -c sql`, which must succeed: its rows, one per line, fields joined by `|`.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.run_psql(sql);
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Like [`PgServer::psql`], `None` when the query fails (a table not created yet).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = self.run_psql(sql);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Makes the server accept TLS connections only (`scripts/postgres.sh tls`): returns the
    /// file of the CA that signed its certificate (for 127.0.0.1 and localhost).
    pub fn require_tls(&self) -> PathBuf {
        let out = script(&["tls", self.data().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// The server's folder (for tests that look at its log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = script(&["stop", self.data().to_str().unwrap_or_default()]);
    }
}
