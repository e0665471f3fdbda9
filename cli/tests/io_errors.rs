//! An I/O error while writing (a full disk, here a file-size limit hit by the first large file:
//! the saved copy of a reference table, or a table file) ends the run with
//! exit 1 and the error, without panic output, and the next run recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::process::Command;

use common::{assert_success, repo};

/// Writes fail with EFBIG once a file passes 50 KiB (`ulimit -f`, with SIGXFSZ ignored so the
/// write returns the error as a full disk would); a run without the limit then completes.
#[test]
fn a_failed_table_write_exits_1_without_panics_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let weir = env!("CARGO_BIN_EXE_weir");
    let example = repo().join("examples/ecommerce");
    let limited = Command::new("bash")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 50; exec "$0" run "$1" --once --lake "$2""#)
        .arg(weir)
        .arg(&example)
        .arg(&lake)
        .env("EVENTS", "30000")
        .env("WEIR_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let again = common::weir()
        .args(["run", "--once", "--lake"])
        .arg(&lake)
        .arg(&example)
        .env("EVENTS", "30000")
        .output()
        .unwrap();
    assert_success(&again, "the run after the failed one");
}
