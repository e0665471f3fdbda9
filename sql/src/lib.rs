//! Weir's SQL dialect: pipeline files of `CREATE SOURCE`, `CREATE TABLE ... AS SELECT` and
//! `CREATE VIEW ... AS SELECT` statements, parsed with DataFusion's sqlparser and planned into
//! DataFusion logical plans over the pipeline's streams.
//!
//! Every error names the file, line and column and says what to write instead.

pub mod dead_letter_topic;
pub mod env;
pub mod error;
mod explain;
mod graph;
pub mod identifiers;
pub mod interval;
pub mod interval_joins;
pub mod parser;
mod pipeline_files;
pub mod planner;
mod reference_plan;
pub mod rewrite;
pub mod sinks;
mod source_plan;
pub mod spark_windows;
mod statements;
pub mod steps;
pub mod stream_joins;
mod stream_plan;
mod table_nodes;
pub mod windows;

pub use error::{SqlError, SqlErrors};
pub use parser::{load_pipeline_files, load_pipeline_files_with_env, PipelineFile};
pub use planner::{
    plan_pipeline, PlannedNode, PlannedPipeline, PlannedReference, PlannedSource, StreamKind,
    TableSink,
};
