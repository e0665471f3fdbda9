//! Weir's runtime: reads sources in micro-batch epochs, decodes records into Arrow, runs the
//! pipeline's DataFusion plans over each epoch and hands the results to sinks, with a
//! write-ahead offset log and a commit log so a restart neither loses nor repeats an epoch.
//!
//! The engine knows sinks only through the [`sink::Sink`] trait, so it never depends on Delta.

pub mod connectors;
pub mod count_distinct;
pub mod dead_letter;
pub mod duration;
pub mod error;
pub mod event_time;
pub mod format;
pub mod operators;
pub mod options;
pub mod reference;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod types;

pub use error::{EngineError, Result};
