//! The checkpoint folder: a write-ahead offset log and a commit log, one small JSON file per
//! epoch, written atomically (temp file, fsync, rename).
//!
//! `offsets/<epoch>` is written before an epoch reads anything; `commits/<epoch>` after every
//! sink committed it. On restart, an epoch with offsets but no commit is re-run over exactly the
//! logged ranges (sinks skip what they already committed), then new epochs continue after it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::operators::{StateLayout, StateSnapshot, StoredState};
use crate::runtime::partition::MaxEventTimes;

/// Version of the files in this folder; a different version is refused, never reinterpreted.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// What an epoch reads: the range of every source that had new data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OffsetEntry {
    /// Format version of this file.
    pub format_version: u32,
    /// The epoch number (1, 2, ...).
    pub epoch: u64,
    /// Source name -> connector-specific range.
    pub sources: BTreeMap<String, Value>,
    /// When the epoch was planned (RFC 3339).
    pub planned_at: String,
    /// A drain epoch reads nothing and treats the input as ended: the watermark passes every
    /// window (`weir run --once --drain`).
    #[serde(default)]
    pub drain: bool,
    /// The version of each reference table the epoch joins (a replay joins the same rows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, String>,
}

/// What an epoch produced, written once every sink committed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CommitEntry {
    /// Format version of this file.
    pub format_version: u32,
    /// The epoch number.
    pub epoch: u64,
    /// When the epoch committed (RFC 3339).
    pub committed_at: String,
    /// Records read per source.
    pub rows_in: BTreeMap<String, u64>,
    /// Records dead-lettered per source.
    pub dead_letters: BTreeMap<String, u64>,
    /// Rows written per table.
    pub rows_out: BTreeMap<String, u64>,
    /// Largest event time seen so far per source with a watermark, or per partition of it
    /// (epoch milliseconds).
    #[serde(default, with = "crate::runtime::partition::checkpoint_format")]
    pub max_event_time_ms: MaxEventTimes,
    /// The watermark the next epoch uses (epoch milliseconds), once every source has one.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Rows that arrived after their window was closed, per windowed node.
    #[serde(default)]
    pub late_rows: BTreeMap<String, u64>,
    /// The watermark this epoch used. In the next epoch, an operator fed by another operator
    /// judges lateness by it (Spark's rule for stateful operators in sequence). Absent in
    /// checkpoints written before it was recorded.
    #[serde(default)]
    pub epoch_watermark_ms: Option<i64>,
}

impl Checkpoint {
    /// The file that holds `node`'s window state as of the end of `epoch`.
    pub fn state_file(&self, node: &str, epoch: u64) -> PathBuf {
        self.root
            .join("state")
            .join(node)
            .join(format!("{epoch}.arrow"))
    }

    /// Stores a stateful node's state as of the end of `epoch` (Arrow IPC), and removes state
    /// older than the previous epoch's, which a restart can no longer need.
    pub fn write_state(&self, node: &str, epoch: u64, snapshot: &StateSnapshot) -> Result<()> {
        let (schema, batches) = (&snapshot.layout.schema, &snapshot.batches);
        let path = self.state_file(node, epoch);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::checkpoint(&dir, "cannot create folder", e))?;
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp)
            .map_err(|e| EngineError::checkpoint(&tmp, "cannot create", e))?;
        let mut writer = FileWriter::try_new(file, schema)
            .map_err(|e| EngineError::checkpoint(&tmp, "cannot write state", e))?;
        writer.write_metadata(DEFINITION_KEY, &snapshot.layout.definition);
        writer.write_metadata(STATE_FORMAT_KEY, snapshot.layout.format_version.to_string());
        for b in batches {
            writer
                .write(b)
                .map_err(|e| EngineError::checkpoint(&tmp, "cannot write state", e))?;
        }
        let file = writer
            .into_inner()
            .map_err(|e| EngineError::checkpoint(&tmp, "cannot write state", e))?;
        file.sync_all()
            .map_err(|e| EngineError::checkpoint(&tmp, "cannot write state", e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| EngineError::checkpoint(&path, "cannot rename into place", e))?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let old = name
                    .strip_suffix(".arrow")
                    .and_then(|n| n.parse::<u64>().ok());
                if old.is_some_and(|e| e + 1 < epoch) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// A stateful node's state as of the end of `epoch`, if it was stored; refused when it
    /// was built for another layout (another definition, other columns, a newer format).
    pub fn read_state(
        &self,
        node: &str,
        epoch: u64,
        layout: &StateLayout,
    ) -> Result<Option<StoredState>> {
        let (expected, definition) = (&layout.schema, layout.definition.as_str());
        let path = self.state_file(node, epoch);
        if !path.exists() {
            return Ok(None);
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| EngineError::checkpoint(&path, "cannot read", e))?;
        let reader = FileReader::try_new(file, None).map_err(|e| {
            EngineError::checkpoint(
                &path,
                "is not a readable state file; use a new --checkpoint folder",
                e,
            )
        })?;
        // State files from before format versions were recorded are version 1.
        let format: u32 = reader
            .custom_metadata()
            .get(STATE_FORMAT_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if format > layout.format_version {
            return Err(EngineError::Checkpoint {
                path,
                message: format!(
                    "`{node}`'s state was written in state format {format} by a newer weir; \
                     this weir reads up to format {}: run the newer weir",
                    layout.format_version
                ),
                cause: None,
            });
        }
        // The state's columns are the window, the group keys and each aggregate's partial
        // state: if they differ, the query's windows, keys or aggregates changed since the
        // checkpoint, and its state cannot be reused.
        // State files written before definitions were recorded have none: their columns are
        // all there is to compare.
        if let Some(old) = reader.custom_metadata().get(DEFINITION_KEY) {
            if old != definition {
                return Err(EngineError::Checkpoint {
                    path,
                    message: format!(
                        "`{node}` changed since this checkpoint: its window state was built for \
                         ({old}) but the query now asks for ({definition}). State built for \
                         other windows, keys or aggregates cannot be reused. To start over, \
                         delete the checkpoint folder and the node's table (or run with a new \
                         --checkpoint and --lake); to keep the old results, undo the change."
                    ),
                    cause: None,
                });
            }
        }
        let found = describe_columns(&reader.schema());
        let wanted = describe_columns(expected);
        if found != wanted {
            return Err(EngineError::Checkpoint {
                path,
                message: format!(
                    "`{node}` changed since this checkpoint: its window state holds ({found}) \
                     but the query now keeps ({wanted}). The window, group keys or aggregates \
                     changed. To start over, delete the checkpoint folder and the node's table \
                     (or run with a new --checkpoint and --lake); to keep the old results, \
                     undo the change."
                ),
                cause: None,
            });
        }
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| EngineError::checkpoint(&path, "is not a readable state file", e))?;
        Ok(Some(StoredState {
            format_version: format,
            batches,
        }))
    }
}

/// The key under which a state file records its operator's definition (Arrow IPC file
/// metadata; named for the first operator, windows, and kept for old checkpoints).
const DEFINITION_KEY: &str = "weir.window_definition";

/// The key under which a state file records its operator's state format version.
const STATE_FORMAT_KEY: &str = "weir.state_format";

/// `name type, ...` of a schema's columns, for comparing and explaining state layouts.
fn describe_columns(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Identity of the checkpoint folder, checked on every start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CheckpointMetadata {
    format_version: u32,
    pipeline: String,
}

/// A pipeline's checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    root: PathBuf,
}

/// The exclusive right to run a pipeline against one checkpoint folder, held from start to
/// exit. It is an OS file lock (`flock`) on `<checkpoint>/run.lock`, so a process that dies
/// (kill -9 included) releases it: a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl Checkpoint {
    /// Takes the run lock, or fails naming the process that holds it: two runs of one
    /// pipeline would commit the same epochs twice.
    pub fn lock(&self) -> Result<RunLock> {
        use std::io::Write;
        let path = self.root.join("run.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| EngineError::checkpoint(&path, "cannot open the run lock", e))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message another run prints.
                let _ = file.set_len(0);
                let _ = write!(file, "{}", std::process::id());
                let _ = file.flush();
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(EngineError::Checkpoint {
                    path,
                    message: format!(
                        "another `weir run` (PID {}) is running this pipeline with this \
                         checkpoint; two runs would commit the same epochs twice. Stop it \
                         first, or give this run its own --checkpoint and --lake",
                        holder.trim()
                    ),
                    cause: None,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(EngineError::checkpoint(
                &path,
                "cannot take the run lock",
                e,
            )),
        }
    }

    /// Opens (creating if needed) the checkpoint folder of `pipeline` at `root`.
    pub fn open(root: impl Into<PathBuf>, pipeline: &str) -> Result<Self> {
        let root = root.into();
        for dir in ["offsets", "commits"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path)
                .map_err(|e| EngineError::checkpoint(&path, "cannot create folder", e))?;
        }
        let cp = Checkpoint { root };
        let meta_path = cp.root.join("metadata.json");
        let expected = CheckpointMetadata {
            format_version: CHECKPOINT_FORMAT_VERSION,
            pipeline: pipeline.to_string(),
        };
        if meta_path.exists() {
            let found: CheckpointMetadata = read_json(&meta_path)?;
            if found.format_version != CHECKPOINT_FORMAT_VERSION {
                return Err(EngineError::Checkpoint {
                    path: meta_path,
                    message: format!(
                        "written by checkpoint format {}, this weir reads format {}; use a new \
                         --checkpoint folder (the tables stay valid)",
                        found.format_version, CHECKPOINT_FORMAT_VERSION
                    ),
                    cause: None,
                });
            }
        } else {
            write_atomic(&meta_path, &expected)?;
        }
        Ok(cp)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn epochs(&self, dir: &str) -> Result<Vec<u64>> {
        let path = self.root.join(dir);
        let entries = std::fs::read_dir(&path)
            .map_err(|e| EngineError::checkpoint(&path, "cannot list", e))?;
        let mut epochs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Every offset entry, oldest first.
    pub fn all_offsets(&self) -> Result<Vec<OffsetEntry>> {
        self.epochs("offsets")?
            .into_iter()
            .map(|e| self.read_entry("offsets", e))
            .collect()
    }

    /// Every commit entry, oldest first.
    pub fn all_commits(&self) -> Result<Vec<CommitEntry>> {
        self.epochs("commits")?
            .into_iter()
            .map(|e| self.read_entry("commits", e))
            .collect()
    }

    /// Per windowed node: the state file of `epoch`, its size in bytes and its rows.
    pub fn state_sizes(&self, epoch: u64) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut out = BTreeMap::new();
        let dir = self.root.join("state");
        let Ok(nodes) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for node in nodes.flatten() {
            let name = node.file_name().to_string_lossy().to_string();
            let path = self.state_file(&name, epoch);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let file = std::fs::File::open(&path)
                .map_err(|e| EngineError::checkpoint(&path, "cannot read", e))?;
            let rows = FileReader::try_new(file, None)
                .map_err(|e| EngineError::checkpoint(&path, "is not a readable state file", e))?
                .filter_map(|b| b.ok())
                .map(|b| b.num_rows() as u64)
                .sum();
            out.insert(name, (meta.len(), rows));
        }
        Ok(out)
    }

    /// The newest commit entry, if any epoch committed.
    pub fn latest_commit(&self) -> Result<Option<CommitEntry>> {
        match self.epochs("commits")?.last() {
            Some(&e) => Ok(Some(self.read_entry("commits", e)?)),
            None => Ok(None),
        }
    }

    fn read_entry<T: serde::de::DeserializeOwned + HasVersion>(
        &self,
        dir: &str,
        epoch: u64,
    ) -> Result<T> {
        let path = self.root.join(dir).join(epoch.to_string());
        let entry: T = read_json(&path)?;
        if entry.format_version() != CHECKPOINT_FORMAT_VERSION {
            return Err(EngineError::Checkpoint {
                path,
                message: format!(
                    "format version {} is not {}; use a new --checkpoint folder",
                    entry.format_version(),
                    CHECKPOINT_FORMAT_VERSION
                ),
                cause: None,
            });
        }
        Ok(entry)
    }

    /// Logs an epoch's ranges before it reads them.
    pub fn write_offsets(&self, entry: &OffsetEntry) -> Result<()> {
        write_atomic(
            &self.root.join("offsets").join(entry.epoch.to_string()),
            entry,
        )
    }

    /// Logs that an epoch committed everywhere (and forgets an earlier run's failure).
    pub fn write_commit(&self, entry: &CommitEntry) -> Result<()> {
        write_atomic(
            &self.root.join("commits").join(entry.epoch.to_string()),
            entry,
        )?;
        let failure = self.root.join(LAST_FAILURE);
        match std::fs::remove_file(&failure) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(EngineError::checkpoint(failure, "cannot remove", e))
            }
            _ => Ok(()),
        }
    }

    /// Records why a run stopped in an epoch, for `weir status`, until an epoch commits.
    pub fn write_failure(&self, failure: &EpochFailure) -> Result<()> {
        write_atomic(&self.root.join(LAST_FAILURE), failure)
    }

    /// Why the last run stopped in an epoch, if no epoch committed since.
    pub fn last_failure(&self) -> Result<Option<EpochFailure>> {
        let path = self.root.join(LAST_FAILURE);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }
}

/// The file that holds the last run's [`EpochFailure`].
const LAST_FAILURE: &str = "last_failure.json";

/// Why a run stopped in an epoch: kept in the checkpoint until an epoch commits, so `weir
/// status` can say which epoch failed, why, and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochFailure {
    /// The epoch that failed (the next run replays or replans it).
    pub epoch: u64,
    /// When it failed (RFC 3339).
    pub failed_at: String,
    /// The error, as the run printed it.
    pub error: String,
    /// What the user can do about it.
    pub what_to_do: String,
}

trait HasVersion {
    fn format_version(&self) -> u32;
}
impl HasVersion for OffsetEntry {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}
impl HasVersion for CommitEntry {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::checkpoint(path, "cannot read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        EngineError::checkpoint(
            path,
            "is not a valid checkpoint file (edited or truncated?); restore it or use a new \
             --checkpoint folder",
            e,
        )
    })
}

/// Writes `value` as JSON so that readers see either the old file or the whole new one.
fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::checkpoint(path, "cannot serialise", e))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)
        .map_err(|e| EngineError::checkpoint(&tmp, "cannot create", e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| EngineError::checkpoint(&tmp, "cannot write", e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| EngineError::checkpoint(path, "cannot rename into place", e))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; not every platform can open a folder, so best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The current time as RFC 3339, for log entries.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_sort_numerically() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path(), "p").unwrap();
        for epoch in [2, 10, 1] {
            cp.write_offsets(&OffsetEntry {
                format_version: CHECKPOINT_FORMAT_VERSION,
                epoch,
                sources: BTreeMap::new(),
                planned_at: now_rfc3339(),
                drain: false,
                references: BTreeMap::new(),
            })
            .unwrap();
        }
        let epochs: Vec<u64> = cp.all_offsets().unwrap().iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, vec![1, 2, 10]);
        assert!(cp.latest_commit().unwrap().is_none());
        cp.write_commit(&CommitEntry {
            format_version: CHECKPOINT_FORMAT_VERSION,
            epoch: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cp.latest_commit().unwrap().unwrap().epoch, 1);
    }

    #[test]
    fn corrupt_entry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path(), "p").unwrap();
        std::fs::write(dir.path().join("commits/3"), "{not json").unwrap();
        let err = cp.latest_commit().unwrap_err().to_string();
        assert!(err.contains("commits/3"), "{err}");
        assert!(err.contains("not a valid checkpoint file"), "{err}");
    }
}
