//! Exactly-once across hard crashes: `weir run` is killed with SIGKILL at seeded-random moments
//! (while reading, writing Delta files, committing, or writing the checkpoint), restarted each
//! time, and at the end every table equals one uninterrupted run over the same events,
//! including the windowed gold tables, whose open windows live in checkpointed state, and the
//! tables of its dedupe, stream joins and reference-table lookups. The products reference
//! table changes while one of the killed runs is running; the uninterrupted run changes it
//! between the same two epochs (the first epoch whose offset entry logs the new version).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_same_tables, repo, weir, KillDelays, ECOMMERCE_JOIN_TABLES, ECOMMERCE_TABLES};
use weir_engine::runtime::checkpoint::Checkpoint;

/// 15 epochs of 2,000 events over about four hours of event time, so hourly windows close
/// during the run (and `--drain` emits the rest).
const ENV: [(&str, &str); 2] = [("EVENTS", "30000"), ("EVENTS_PER_TRIGGER", "2000")];

/// A copy of `examples/ecommerce` (with its reference files) in `dir`, which the test may change.
fn copy_example(dir: &Path) -> PathBuf {
    let example = repo().join("examples/ecommerce");
    let copy = dir.join("ecommerce");
    std::fs::create_dir_all(copy.join("reference")).unwrap();
    for sub in ["", "reference"] {
        for entry in std::fs::read_dir(example.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, copy.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    copy
}

/// Every product gets another brand; written whole and renamed into place, as a tool that
/// publishes a reference file should.
fn rebrand_products(pipeline: &Path) {
    let path = pipeline.join("reference/products.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let tmp = pipeline.join("reference/.products.csv.tmp");
    std::fs::write(&tmp, text.replace(",brand-", ",rebrand-")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn run(pipeline: &Path, lake: &Path) -> Command {
    let mut cmd = weir();
    cmd.arg("run")
        .arg(pipeline)
        .args(["--once", "--drain", "--progress", "quiet", "--lake"])
        .arg(lake)
        .envs(ENV)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn checkpoint(lake: &Path) -> Checkpoint {
    Checkpoint::open(lake.join("_checkpoints/ecommerce"), "ecommerce").unwrap()
}

/// The first epoch whose offset entry logs a `products` version other than epoch 1's.
fn first_epoch_of_new_products(lake: &Path) -> Option<u64> {
    let offsets = checkpoint(lake).all_offsets().unwrap();
    let first = offsets.first()?.references.get("products")?.clone();
    offsets
        .iter()
        .find(|e| e.references.get("products") != Some(&first))
        .map(|e| e.epoch)
}

#[test]
fn killed_and_restarted_run_equals_uninterrupted_run() {
    let crashed_dir = tempfile::tempdir().unwrap();
    let crashed_pipeline = copy_example(crashed_dir.path());
    let crashed = crashed_dir.path().join("lake");
    // A restart takes about a second (planning, opening tables, restoring state) before its
    // first epoch; an epoch about as long again in a debug build.
    let mut delays = KillDelays::new(0x5eed, 800, 3200);
    let mut killed_after: Vec<usize> = Vec::new(); // epochs committed at each kill
    let mut rebranded = false;
    // Kill until runs died at several epochs.
    for _ in 0..40 {
        let committed = checkpoint(&crashed).all_commits().unwrap().len();
        if killed_after.len() >= 8 && committed >= 6 {
            break;
        }
        let delay = delays.next(committed);
        // Once an epoch is committed, the reference changes halfway through a run.
        let change_now = !rebranded && committed >= 1;
        let mut child = run(&crashed_pipeline, &crashed).spawn().unwrap();
        if change_now {
            std::thread::sleep(delay / 2);
            rebrand_products(&crashed_pipeline);
            rebranded = true;
            std::thread::sleep(delay / 2);
        } else {
            std::thread::sleep(delay);
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no chance to finish the epoch
            child.wait().unwrap();
            killed_after.push(checkpoint(&crashed).all_commits().unwrap().len());
        }
        child.wait().unwrap();
    }
    let mut epochs_killed_in = killed_after.clone();
    epochs_killed_in.dedup();
    assert!(
        killed_after.len() >= 6 && epochs_killed_in.len() >= 3,
        "runs were killed after {killed_after:?} committed epochs: too few kills, or too few \
         epochs apart; lengthen the run"
    );
    eprintln!("killed after {killed_after:?} committed epochs");
    assert!(
        rebranded,
        "no killed run committed an epoch; the reference never changed"
    );
    let last = run(&crashed_pipeline, &crashed)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "final restart failed: {}",
        String::from_utf8_lossy(&last.stderr)
    );

    let changed_at = first_epoch_of_new_products(&crashed)
        .expect("no epoch of the crashed runs logged the changed products file");
    assert!(
        changed_at > 1,
        "the reference changed before the first epoch"
    );

    // The uninterrupted run: the epochs before `changed_at`, the change, the rest.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference_pipeline = copy_example(reference_dir.path());
    let reference = reference_dir.path().join("lake");
    let before = run(&reference_pipeline, &reference)
        .args(["--max-epochs", &(changed_at - 1).to_string()])
        .status()
        .unwrap();
    assert!(before.success());
    rebrand_products(&reference_pipeline);
    assert!(run(&reference_pipeline, &reference)
        .status()
        .unwrap()
        .success());
    assert_eq!(first_epoch_of_new_products(&reference), Some(changed_at));

    assert_same_tables(&reference, &crashed, &ECOMMERCE_TABLES, 1);
    assert_same_tables(&reference, &crashed, &ECOMMERCE_JOIN_TABLES, 1);
}
