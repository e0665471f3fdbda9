//! Reference tables at run time: which version each epoch joins, kept exactly once.
//!
//! Before an epoch is logged, each reference is asked for its current version; a new version
//! is loaded, its rows saved in the checkpoint (`<checkpoint>/references/<name>/<version>.arrow`)
//! and set on the table queries read. The version goes into the epoch's offset log, so a
//! replay of the epoch after a crash joins the saved rows of that version even if the files
//! have changed since. After each commit, saved versions other than the one in use are
//! removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use tracing::info;

use super::epoch_table::EpochTable;
use super::pipeline::Pipeline;
use crate::error::{EngineError, Result};
use crate::reference::{reference_error, ReferenceTable};

/// A reference table of a pipeline, as the planner opened it.
pub struct ReferenceNode {
    /// Name from `CREATE REFERENCE TABLE`.
    pub name: String,
    /// The connector's table.
    pub table: Arc<dyn ReferenceTable>,
    /// The rows queries read (the version in use).
    pub rows: Arc<EpochTable>,
}

/// A reference table while the pipeline runs.
pub(super) struct RunningReference {
    pub(super) node: ReferenceNode,
    /// The version `node.rows` holds.
    pub(super) loaded: Option<String>,
}

/// How often a reference whose files change while being read is read again.
const LOAD_ATTEMPTS: usize = 5;

impl Pipeline {
    /// Pins each reference to its current version for the epoch about to be logged (loading
    /// and saving a new one); returns the versions for the offset log.
    pub(super) async fn pin_references(&mut self) -> Result<BTreeMap<String, String>> {
        let mut pinned = BTreeMap::new();
        let root = self.checkpoint_root().to_path_buf();
        for reference in &mut self.references {
            let version = pin(reference, &root).await?;
            pinned.insert(reference.node.name.clone(), version);
        }
        Ok(pinned)
    }

    /// Makes each reference hold the version `pinned` names for a replayed epoch: the saved
    /// rows of that version. A reference the log does not name (a checkpoint from before it
    /// was declared) is pinned to its current version.
    pub(super) async fn use_references(&mut self, pinned: &BTreeMap<String, String>) -> Result<()> {
        let root = self.checkpoint_root().to_path_buf();
        for reference in &mut self.references {
            let name = reference.node.name.clone();
            let Some(version) = pinned.get(&name) else {
                pin(reference, &root).await?;
                continue;
            };
            if reference.loaded.as_ref() == Some(version) {
                continue;
            }
            let rows = match read_copy(&copy_path(&root, &name, version))? {
                Some(rows) => rows,
                None => match reference.node.table.load(version).await? {
                    Some(rows) => rows,
                    None => {
                        return Err(reference_error(
                            &name,
                            &reference.node.table.describe(),
                            format!(
                                "the replayed epoch joined version {version}, which is neither \
                                 saved in the checkpoint nor readable any more"
                            ),
                        ))
                    }
                },
            };
            reference.node.rows.set(rows);
            reference.loaded = Some(version.clone());
        }
        Ok(())
    }

    /// Removes saved versions no epoch can replay any more (all but the ones in use).
    pub(super) fn prune_reference_copies(&self) {
        let root = self.checkpoint_root().to_path_buf();
        for reference in &self.references {
            let dir = root.join("references").join(&reference.node.name);
            let keep = reference.loaded.as_deref().map(file_name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if Some(entry.file_name().to_string_lossy().to_string()) != keep {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// The reference's current version, loaded and saved when it is not the one held.
async fn pin(reference: &mut RunningReference, root: &Path) -> Result<String> {
    let table = Arc::clone(&reference.node.table);
    let name = reference.node.name.clone();
    for _ in 0..LOAD_ATTEMPTS {
        let version = table.current_version().await?;
        if reference.loaded.as_ref() == Some(&version) {
            return Ok(version);
        }
        let Some(rows) = table.load(&version).await? else {
            continue;
        };
        write_copy(&copy_path(root, &name, &version), &table, &rows)?;
        let count: usize = rows.iter().map(RecordBatch::num_rows).sum();
        info!(reference = %name, version = %version, rows = count, "loaded reference table");
        reference.node.rows.set(rows);
        reference.loaded = Some(version.clone());
        return Ok(version);
    }
    Err(reference_error(
        &name,
        &table.describe(),
        format!("it changed every time it was read ({LOAD_ATTEMPTS} times): write new versions atomically (a new file renamed into place)"),
    ))
}

fn file_name(version: &str) -> String {
    format!("{version}.arrow")
}

fn copy_path(root: &Path, name: &str, version: &str) -> PathBuf {
    root.join("references").join(name).join(file_name(version))
}

/// Saves a version's rows (Arrow IPC, written aside and renamed into place).
fn write_copy(path: &Path, table: &Arc<dyn ReferenceTable>, rows: &[RecordBatch]) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let failed = |e: &dyn std::fmt::Display| EngineError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("cannot save a version of the reference table: {e}"),
        cause: None,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
    }
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| failed(&e))?;
    let mut writer = FileWriter::try_new(file, &table.schema()).map_err(|e| failed(&e))?;
    for batch in rows {
        writer.write(batch).map_err(|e| failed(&e))?;
    }
    let file = writer.into_inner().map_err(|e| failed(&e))?;
    file.sync_all().map_err(|e| failed(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(&e))
}

/// A saved version's rows, if saved.
fn read_copy(path: &Path) -> Result<Option<Vec<RecordBatch>>> {
    if !path.exists() {
        return Ok(None);
    }
    let file =
        std::fs::File::open(path).map_err(|e| EngineError::checkpoint(path, "cannot open", e))?;
    let reader = FileReader::try_new(file, None)
        .map_err(|e| EngineError::checkpoint(path, "cannot read a saved reference", e))?;
    let rows = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::checkpoint(path, "cannot read a saved reference", e))?;
    Ok(Some(rows))
}
