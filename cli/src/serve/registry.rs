//! The pipelines a server runs: each submitted pipeline's SQL files are kept in
//! `<state>/pipelines/<name>/`, its checkpoint is the lake's (`<lake>/_checkpoints/<name>`, as
//! for `weir run`), and a restarted server starts every pipeline that was not stopped, from
//! its checkpoint. A pipeline that fails is marked failed with its error; the others go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;
use weir_engine::runtime::progress::EpochReport;
use weir_engine::runtime::RunOptions;
use weir_engine::runtime::{GraphNode, PipelineHandle, RunState};

use super::recent::{EpochPoint, Recent};
use crate::commands::{default_threads, open_pipeline, plan, CliError};

/// A file of a submitted pipeline: its `.sql` files, and the files beside them that its SQL
/// names by a relative path (reference tables' CSV files).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SubmittedFile {
    /// Its path inside the pipeline's folder (`01_sources.sql`, `reference/users.csv`).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// The marker file of a pipeline stopped on request (not started again with the server).
const STOPPED: &str = ".stopped";

/// What the API shows of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineView {
    /// The pipeline's name.
    pub name: String,
    /// `starting`, `running`, `stopping`, `stopped`, `finished` (its sources ended) or
    /// `failed`.
    pub state: String,
    /// The last epoch committed by this run.
    pub epoch: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The last epoch's report: records and rates per source, rows per table, watermark,
    /// state per operator, dead letters, late rows.
    pub latest: Option<EpochReport>,
}

/// One pipeline the server knows.
struct Managed {
    folder: PathBuf,
    handle: Option<PipelineHandle>,
    /// Set when a start failed before the run began (its SQL no longer plans, a locked
    /// checkpoint).
    start_error: Option<String>,
    /// Its sources, tables and views, as of its last start.
    graph: Vec<GraphNode>,
    /// Its recent epochs (kept across its restarts).
    recent: Arc<Mutex<Recent>>,
}

/// What the API shows of one pipeline in detail.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineDetail {
    /// State, epoch, error and the last epoch's report.
    pub pipeline: PipelineView,
    /// Its recent progress lines, oldest first.
    pub progress: Vec<String>,
    /// Its recent epochs for charts, oldest first.
    pub history: Vec<EpochPoint>,
    /// Its sources, tables and views, each with what it reads.
    pub graph: Vec<GraphNode>,
}

/// Every pipeline of one server.
pub struct Registry {
    lake: PathBuf,
    folder: PathBuf,
    pipelines: AsyncMutex<BTreeMap<String, Managed>>,
}

/// A pipeline name: letters, digits, `_` and `-` (it names a folder and a checkpoint).
pub fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "`{name}` is not a pipeline name: use letters, digits, `_` and `-`"
        )))
    }
}

impl Registry {
    /// The registry of a server with its state in `state` and its tables in `lake`.
    pub fn new(lake: &Path, state: &Path) -> Result<Registry, CliError> {
        let folder = state.join("pipelines");
        std::fs::create_dir_all(&folder)?;
        std::fs::create_dir_all(lake)?;
        Ok(Registry {
            lake: lake.to_path_buf(),
            folder,
            pipelines: AsyncMutex::new(BTreeMap::new()),
        })
    }

    /// Starts every kept pipeline that was not stopped (a restarted server resumes them).
    pub async fn resume(&self) -> Result<(), CliError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.folder)?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let folder = self.folder.join(&name);
            let stopped = folder.join(STOPPED).exists();
            let mut pipelines = self.pipelines.lock().await;
            let managed = pipelines.entry(name.clone()).or_insert_with(|| Managed {
                folder,
                handle: None,
                start_error: None,
                graph: Vec::new(),
                recent: Arc::default(),
            });
            if !stopped {
                tracing::info!(pipeline = %name, "resuming from its checkpoint");
                start(&self.lake, &name, managed).await;
            }
        }
        Ok(())
    }

    /// Checks `files` as pipeline `name` (the errors `weir validate` gives), keeps them and
    /// starts the pipeline. A pipeline of that name that is not running is replaced; a
    /// running one must be stopped first.
    pub async fn submit(&self, name: &str, files: Vec<SubmittedFile>) -> Result<(), CliError> {
        check_name(name)?;
        if !files
            .iter()
            .any(|f| !f.name.contains('/') && f.name.ends_with(".sql"))
        {
            return Err(CliError::Usage("the pipeline has no .sql file".into()));
        }
        for f in &files {
            let relative = !f.name.is_empty()
                && Path::new(&f.name)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !relative {
                return Err(CliError::Usage(format!(
                    "`{}` is not a file name inside the pipeline's folder",
                    f.name
                )));
            }
        }
        let mut pipelines = self.pipelines.lock().await;
        if pipelines.get(name).is_some_and(Managed::is_running) {
            return Err(CliError::Usage(format!(
                "pipeline `{name}` is running; stop it first (weir stop {name})"
            )));
        }
        // Planned from a fresh folder of the same name, so errors name the files as sent.
        let staging = self.folder.join(format!(".{name}.new"));
        let _ = std::fs::remove_dir_all(&staging);
        let target = staging.join(name);
        std::fs::create_dir_all(&target)?;
        for f in &files {
            let path = target.join(&f.name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &f.text)?;
        }
        let checked = match plan(&target, default_threads()).await {
            Ok(planned) => writes_inside_lake(&planned),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let folder = self.folder.join(name);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::rename(&target, &folder)?;
        let _ = std::fs::remove_dir_all(&staging);
        let managed = pipelines
            .entry(name.to_string())
            .or_insert_with(|| Managed {
                folder: folder.clone(),
                handle: None,
                start_error: None,
                graph: Vec::new(),
                recent: Arc::default(),
            });
        start(&self.lake, name, managed).await;
        Ok(())
    }

    /// Every pipeline, by name.
    pub async fn list(&self) -> Vec<PipelineView> {
        let pipelines = self.pipelines.lock().await;
        pipelines.iter().map(|(n, m)| m.view(n)).collect()
    }

    /// One pipeline, with its recent epochs and its graph.
    pub async fn show(&self, name: &str) -> Option<PipelineDetail> {
        let pipelines = self.pipelines.lock().await;
        let managed = pipelines.get(name)?;
        let (progress, history) = managed
            .recent
            .lock()
            .map(|r| (r.lines(), r.points()))
            .unwrap_or_default();
        Some(PipelineDetail {
            pipeline: managed.view(name),
            progress,
            history,
            graph: managed.graph.clone(),
        })
    }

    /// Asks a pipeline to stop after its current epoch, and keeps it stopped across server
    /// restarts. `false` when there is no such pipeline.
    pub async fn stop(&self, name: &str) -> Result<bool, CliError> {
        let pipelines = self.pipelines.lock().await;
        let Some(managed) = pipelines.get(name) else {
            return Ok(false);
        };
        std::fs::write(managed.folder.join(STOPPED), "")?;
        if let Some(handle) = &managed.handle {
            handle.stop();
        }
        Ok(true)
    }

    /// Starts a stopped or failed pipeline again from its checkpoint.
    pub async fn restart(&self, name: &str) -> Result<bool, CliError> {
        let mut pipelines = self.pipelines.lock().await;
        let Some(managed) = pipelines.get_mut(name) else {
            return Ok(false);
        };
        if managed.is_running() {
            return Err(CliError::Usage(format!(
                "pipeline `{name}` is running; stop it first (weir stop {name})"
            )));
        }
        let _ = std::fs::remove_file(managed.folder.join(STOPPED));
        start(&self.lake, name, managed).await;
        Ok(true)
    }

    /// Asks every pipeline to stop after its current epoch and waits until they have (a
    /// server shutting down), without marking them stopped: the next server resumes them.
    pub async fn shutdown(&self) {
        let handles: Vec<PipelineHandle> = {
            let pipelines = self.pipelines.lock().await;
            pipelines
                .values()
                .filter_map(|m| m.handle.clone())
                .collect()
        };
        for handle in &handles {
            handle.stop();
        }
        for handle in &handles {
            while matches!(
                handle.state(),
                RunState::Starting | RunState::Running { .. }
            ) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Refuses a submitted pipeline with a table written outside the server's lake (an absolute
/// path with `allow_outside_lake = true`): what is submitted to a server writes only into
/// its lake (and its declared Kafka topics and PostgreSQL tables).
fn writes_inside_lake(planned: &weir_sql::planner::PlannedPipeline) -> Result<(), CliError> {
    for node in &planned.nodes {
        let Some(path) = node.sink.as_ref().and_then(|s| s.planned.lake_path()) else {
            continue;
        };
        if Path::new(path).is_absolute() {
            return Err(CliError::Usage(format!(
                "{}: table `{}` writes to '{path}', outside the server's lake; a pipeline \
                 submitted to weir serve writes only inside its lake: give a relative path \
                 (or run it with weir run)",
                node.location, node.name
            )));
        }
    }
    Ok(())
}

impl Managed {
    fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|h| matches!(h.state(), RunState::Starting | RunState::Running { .. }))
    }

    fn view(&self, name: &str) -> PipelineView {
        let (state, epoch, error) = match (&self.handle, &self.start_error) {
            (_, Some(e)) => ("failed", None, Some(e.clone())),
            (None, None) => ("stopped", None, None),
            (Some(h), None) => match h.state() {
                RunState::Starting if h.stopping() => ("stopping", None, None),
                RunState::Starting => ("starting", None, None),
                RunState::Running { epoch } if h.stopping() => ("stopping", Some(epoch), None),
                RunState::Running { epoch } => ("running", Some(epoch), None),
                RunState::Finished if h.stopping() => {
                    ("stopped", h.latest().map(|r| r.epoch), None)
                }
                // Its sources ended (a generator's last event, a bounded file source).
                RunState::Finished => ("finished", h.latest().map(|r| r.epoch), None),
                RunState::Failed(e) => ("failed", h.latest().map(|r| r.epoch), Some(e)),
            },
        };
        PipelineView {
            name: name.to_string(),
            state: state.to_string(),
            epoch,
            error,
            latest: self.handle.as_ref().and_then(PipelineHandle::latest),
        }
    }
}

/// Plans, assembles and spawns `name` from its folder; a failure to start is kept as the
/// pipeline's error.
async fn start(lake: &Path, name: &str, managed: &mut Managed) {
    managed.start_error = None;
    managed.handle = None;
    match spawn(lake, name, &managed.folder, managed.recent.clone()).await {
        Ok((handle, graph)) => {
            managed.handle = Some(handle);
            managed.graph = graph;
        }
        Err(e) => {
            tracing::warn!(pipeline = %name, "cannot start: {e}");
            managed.start_error = Some(e.to_string());
        }
    }
}

async fn spawn(
    lake: &Path,
    name: &str,
    folder: &Path,
    recent: Arc<Mutex<Recent>>,
) -> Result<(PipelineHandle, Vec<GraphNode>), CliError> {
    let pipeline = open_pipeline(folder, lake, None, default_threads()).await?;
    let graph = pipeline.graph();
    let pipeline_name = name.to_string();
    let options = RunOptions {
        trigger_interval: Duration::from_secs(1),
        on_epoch: Some(Arc::new(move |report: &EpochReport| {
            tracing::info!(pipeline = %pipeline_name, "{}", report.status_line());
            if let Ok(mut recent) = recent.lock() {
                recent.record(report);
            }
        })),
        ..RunOptions::default()
    };
    let running = pipeline.spawn(options);
    let handle = running.handle.clone();
    let failed = name.to_string();
    tokio::spawn(async move {
        if let Ok((_, Err(e))) = running.task.await {
            tracing::warn!(pipeline = %failed, "failed: {e}");
        }
    });
    Ok((handle, graph))
}
