//! Stateful streaming operators, one per file, each keeping its state outside DataFusion's
//! plans so it survives across epochs.

pub mod row_errors;
pub mod window_aggregate;
pub mod window_exec;
pub mod window_input;
