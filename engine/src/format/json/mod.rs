//! Newline-delimited JSON records into Arrow rows of the declared columns.
//!
//! - `decode`: the decoder a source uses; undecodable records come back with their reason, to
//!   be dead-lettered.
//! - `flat`: the one-pass fast path for flat records of scalars; `cursor` reads a record for it.
//! - `strict`: the rules that make a value fit its column exactly (or, with
//!   `json.lenient = true`, Spark-like coercions), applied identically on both paths.

mod cursor;
pub mod decode;
pub mod flat;
pub mod strict;

pub use decode::{JsonDecoder, Rejected};
