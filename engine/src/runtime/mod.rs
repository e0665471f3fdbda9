//! The epoch loop and everything it keeps: how a pipeline runs, epoch after epoch, exactly once.
//!
//! - `pipeline`: resume from the checkpoint, then plan → log offsets → read → compute → commit.
//! - `prefetch`: plans and reads epochs on blocking threads; reads the next one ahead.
//! - `ingest`: decodes a source's raw records into its stream's rows, with dead letters.
//! - `epoch`: one epoch's computation: every node in DAG order, stateful ones through their
//!   operator (`crate::operators`).
//! - `commit`: tables, dead letters and operator state written concurrently, then the commit log.
//! - `watermark`: the next epoch's watermark from the event times seen.
//! - `checkpoint`: the offset log, commit log, operator state files and the run lock.
//! - `session`, `epoch_table`: the DataFusion session and the tables SQL reads each epoch from.
//! - `nodes`, `options`, `progress`: what a pipeline is made of, how it runs, what it reports.
//! - `metrics`: every epoch recorded for Prometheus; `graph`: the DAG a page draws.
//! - `handle`: stopping and observing a run from elsewhere (`Pipeline::spawn`).

pub mod checkpoint;
mod commit;
pub mod crash_point;
mod epoch;
pub mod epoch_table;
mod graph;
mod handle;
pub mod ingest;
pub mod metrics;
mod nodes;
mod options;
pub mod partition;
mod pipeline;
mod prefetch;
pub mod progress;
mod references;
mod session;
mod watermark;

pub use graph::{GraphNode, NodeKind};
pub use handle::{PipelineHandle, RunState, RunningPipeline};
pub use nodes::{EventTime, QueryNode, SourceNode};
pub use options::{EpochCallback, RunOptions, RunSummary};
pub use pipeline::Pipeline;
pub use references::ReferenceNode;
pub use session::{register_stream, session_context, source_schema};
