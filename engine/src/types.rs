//! Column types a pipeline may declare, mapped to the Arrow types the engine decodes into.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};

/// The timezone every declared TIMESTAMP column carries. Delta's `timestamp` type is an instant
/// in UTC, so decoding into UTC keeps what readers see equal to what the JSON said.
pub const UTC: &str = "UTC";

/// The Arrow type of a declared `TIMESTAMP` column: milliseconds, so that JSON numbers are read
/// as epoch milliseconds (the common Kafka convention), RFC 3339 strings as instants.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from(UTC)))
}

/// Maps a SQL type name as written (`TEXT`, `DOUBLE`, `TIMESTAMP`, ...) to Arrow, or `None` with
/// the list of supported names available from [`SUPPORTED_TYPES`].
pub fn arrow_type_for(sql_type: &str) -> Option<DataType> {
    let upper = sql_type.trim().to_ascii_uppercase();
    let base = upper.split('(').next().unwrap_or("").trim();
    Some(match base {
        "TEXT" | "STRING" | "VARCHAR" | "CHAR" | "CHARACTER VARYING" => DataType::Utf8,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "SMALLINT" | "INT2" => DataType::Int16,
        "INT" | "INTEGER" | "INT4" => DataType::Int32,
        "BIGINT" | "INT8" => DataType::Int64,
        "REAL" | "FLOAT4" | "FLOAT" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" => DataType::Float64,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => timestamp_type(),
        _ => return None,
    })
}

/// The SQL type names [`arrow_type_for`] understands, for error hints.
pub const SUPPORTED_TYPES: &str =
    "TEXT, VARCHAR, BOOLEAN, SMALLINT, INT, BIGINT, REAL, DOUBLE, DATE, TIMESTAMP";
