//! Column types a pipeline may declare, mapped to the Arrow types the engine decodes into.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};

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
    "TEXT, VARCHAR, BOOLEAN, SMALLINT, INT, BIGINT, REAL, DOUBLE, DATE, TIMESTAMP, and nested \
     ARRAY<T>, STRUCT<name: T, ...> (or ROW<name T, ...>), MAP<TEXT, T>";

/// A column type as declared in `CREATE SOURCE`: a scalar type by name, or a nested type
/// (Spark's `ARRAY<STRUCT<name: TYPE>>` and `MAP<K, V>`, Flink's `ROW<name TYPE>`), decoded from
/// JSON arrays and objects.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlType {
    /// A scalar type as written: `TEXT`, `DOUBLE PRECISION`, `VARCHAR(20)`, `TIMESTAMP`.
    Named(String),
    /// `ARRAY<T>`: a JSON array of T.
    Array(Box<SqlType>),
    /// `STRUCT<a: T, ...>` / `ROW<a T, ...>`: a JSON object with these fields (names keep
    /// their spelling, as JSON keys are case-sensitive).
    Struct(Vec<(String, SqlType)>),
    /// `MAP<TEXT, V>`: a JSON object whose keys are data.
    Map(Box<SqlType>, Box<SqlType>),
}

impl SqlType {
    /// The Arrow type, or the first scalar type name that is not supported. Nested fields and
    /// elements are nullable (a JSON object may leave a field out).
    pub fn to_arrow(&self) -> Result<DataType, String> {
        Ok(match self {
            SqlType::Named(name) => arrow_type_for(name).ok_or_else(|| name.clone())?,
            SqlType::Array(element) => {
                DataType::List(Arc::new(Field::new("item", element.to_arrow()?, true)))
            }
            SqlType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|(name, t)| Ok(Field::new(name, t.to_arrow()?, true)))
                    .collect::<Result<Vec<_>, String>>()?
                    .into(),
            ),
            SqlType::Map(key, value) => {
                let key_type = key.to_arrow()?;
                if key_type != DataType::Utf8 {
                    return Err(format!("{self} (JSON object keys are TEXT)"));
                }
                let entries = Field::new(
                    "entries",
                    DataType::Struct(
                        vec![
                            Field::new("key", DataType::Utf8, false),
                            Field::new("value", value.to_arrow()?, true),
                        ]
                        .into(),
                    ),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
        })
    }
}

impl std::fmt::Display for SqlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlType::Named(name) => write!(f, "{name}"),
            SqlType::Array(element) => write!(f, "ARRAY<{element}>"),
            SqlType::Struct(fields) => {
                write!(f, "STRUCT<")?;
                for (i, (name, t)) in fields.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name}: {t}")?;
                }
                write!(f, ">")
            }
            SqlType::Map(key, value) => write!(f, "MAP<{key}, {value}>"),
        }
    }
}

/// The SQL name of a scalar column type, for messages (`TEXT` rather than Arrow's `Utf8`).
pub fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "TEXT".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        other => other.to_string(),
    }
}

/// Whether values of this type are strings or bytes (of any offset width or views): such
/// columns share byte-oriented fast paths (`count(DISTINCT x)`'s accumulator, a dedupe's plain
/// keys).
pub fn is_byte_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}
