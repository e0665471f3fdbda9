//! Controlling and observing a running pipeline from elsewhere (a server, a test, Ctrl-C):
//! ask it to stop after the current epoch, and read its latest progress and state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::options::{RunOptions, RunSummary};
use super::pipeline::Pipeline;
use super::progress::EpochReport;
use crate::error::Result;

/// Where a pipeline run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Started; no epoch has finished yet.
    Starting,
    /// Running; the last finished epoch.
    Running {
        /// The epoch number.
        epoch: u64,
    },
    /// Returned without error (stopped, or `--once` found nothing more).
    Finished,
    /// Returned with this error.
    Failed(String),
}

/// A clonable handle on one pipeline run: stop it, or look at how it is doing.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<Option<EpochReport>>>,
    state: Arc<Mutex<RunState>>,
}

impl PipelineHandle {
    /// A handle on the run that `options` will drive: it shares the stop flag and records
    /// every finished epoch (before calling the options' own callback, if any).
    pub fn attach(options: &mut RunOptions) -> Self {
        let handle = PipelineHandle {
            stop: options.stop.clone(),
            latest: Arc::new(Mutex::new(None)),
            state: Arc::new(Mutex::new(RunState::Starting)),
        };
        let observer = handle.clone();
        let previous = options.on_epoch.take();
        options.on_epoch = Some(Arc::new(move |report: &EpochReport| {
            observer.record(report);
            if let Some(callback) = &previous {
                callback(report);
            }
        }));
        handle
    }

    /// Asks the run to stop once the current epoch has committed.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The report of the last finished epoch, if any.
    pub fn latest(&self) -> Option<EpochReport> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Where the run is.
    pub fn state(&self) -> RunState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(RunState::Failed("the run's state is unreadable".into()))
    }

    fn record(&self, report: &EpochReport) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(report.clone());
        }
        self.set_state(RunState::Running {
            epoch: report.epoch,
        });
    }

    fn set_state(&self, state: RunState) {
        if let Ok(mut current) = self.state.lock() {
            *current = state;
        }
    }
}

/// A pipeline running on its own task, with its handle.
pub struct RunningPipeline {
    /// Stops and observes the run.
    pub handle: PipelineHandle,
    /// The run's outcome (and the pipeline, to run again).
    pub task: JoinHandle<(Pipeline, Result<RunSummary>)>,
}

impl Pipeline {
    /// Runs the pipeline on a task of the current runtime; the handle stops and observes it.
    pub fn spawn(mut self, mut options: RunOptions) -> RunningPipeline {
        let handle = PipelineHandle::attach(&mut options);
        let finished = handle.clone();
        let task = tokio::spawn(async move {
            let result = self.run(&options).await;
            finished.set_state(match &result {
                Ok(_) => RunState::Finished,
                Err(e) => RunState::Failed(e.to_string()),
            });
            (self, result)
        });
        RunningPipeline { handle, task }
    }
}
