//! Weir's lakehouse side: Delta Lake sinks that commit each epoch exactly once, plain Parquet
//! folders (`format = 'parquet'`, `parquet_sink`), and a catalog
//! that registers every Delta table of a lake folder for batch SQL (`weir query`, test oracles).

pub mod catalog;
pub mod dead_letter_table;
pub mod delta_connector;
pub mod delta_reference;
pub mod delta_sink;
pub mod error;
pub mod normalize;
pub mod parquet_layout;
pub mod parquet_sink;

pub use catalog::{find_delta_tables, register_lake};
pub use dead_letter_table::open_dead_letter_table;
pub use delta_connector::{table_location, DeltaConnector, PlannedDeltaTable};
pub use delta_reference::DeltaReferenceConnector;
pub use delta_sink::DeltaSink;
pub use error::LakehouseError;
