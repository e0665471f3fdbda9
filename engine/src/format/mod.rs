//! Record formats: how a source's raw bytes become Arrow rows. JSON is the only one so far.

pub mod json;
