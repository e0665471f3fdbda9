//! How Arrow columns map to PostgreSQL columns: the type a new table declares, the types an
//! existing table may have for a column, and the Arrow type a column is cast to before it is
//! encoded for `COPY ... (FORMAT binary)`.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};

/// The PostgreSQL type a column travels as in the binary `COPY` (the staging table's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `text` (also decimals, as their exact text, cast to `numeric` on insert).
    Text,
    /// `date`.
    Date,
    /// `timestamp without time zone`.
    Timestamp,
    /// `timestamp with time zone`.
    TimestampTz,
    /// `bytea`.
    Bytea,
}

/// One column's mapping: how it is sent and what the target declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// How the column is sent.
    pub wire: WireType,
    /// The type a new table declares (`numeric(12,2)` for a decimal).
    pub declared: String,
    /// The Arrow type the column is cast to before encoding.
    pub arrow: DataType,
}

impl WireType {
    /// The type's name in SQL.
    pub fn sql(self) -> &'static str {
        match self {
            WireType::Bool => "boolean",
            WireType::Int2 => "smallint",
            WireType::Int4 => "integer",
            WireType::Int8 => "bigint",
            WireType::Float4 => "real",
            WireType::Float8 => "double precision",
            WireType::Text => "text",
            WireType::Date => "date",
            WireType::Timestamp => "timestamp without time zone",
            WireType::TimestampTz => "timestamp with time zone",
            WireType::Bytea => "bytea",
        }
    }

    fn arrow(self) -> DataType {
        match self {
            WireType::Bool => DataType::Boolean,
            WireType::Int2 => DataType::Int16,
            WireType::Int4 => DataType::Int32,
            WireType::Int8 => DataType::Int64,
            WireType::Float4 => DataType::Float32,
            WireType::Float8 => DataType::Float64,
            WireType::Text => DataType::Utf8,
            WireType::Date => DataType::Date32,
            WireType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            WireType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
            WireType::Bytea => DataType::Binary,
        }
    }
}

/// The mapping of an Arrow type, or `None` for types a PostgreSQL column cannot take as they
/// are (lists, structs, maps, intervals, times of day).
pub fn column_type(data_type: &DataType) -> Option<ColumnType> {
    let wire = match data_type {
        DataType::Boolean => WireType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => WireType::Int2,
        DataType::Int32 | DataType::UInt16 => WireType::Int4,
        // UInt64 values above i64::MAX are refused when encoded, never wrapped.
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => WireType::Int8,
        DataType::Float16 | DataType::Float32 => WireType::Float4,
        DataType::Float64 => WireType::Float8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => WireType::Text,
        DataType::Date32 | DataType::Date64 => WireType::Date,
        DataType::Timestamp(_, None) => WireType::Timestamp,
        DataType::Timestamp(_, Some(_)) => WireType::TimestampTz,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => WireType::Bytea,
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            return Some(ColumnType {
                wire: WireType::Text,
                declared: format!("numeric({p},{s})"),
                arrow: DataType::Utf8,
            })
        }
        DataType::Dictionary(_, values) => return column_type(values),
        _ => return None,
    };
    Some(ColumnType {
        wire,
        declared: wire.sql().to_string(),
        arrow: wire.arrow(),
    })
}

/// Whether an existing column of type `existing` (as `information_schema.columns.data_type`
/// names it) takes values of `column` without loss: the same type, or a wider one the
/// insert's assignment cast reaches.
pub fn accepts(existing: &str, column: &ColumnType) -> bool {
    let existing = existing.to_ascii_lowercase();
    if column.declared.starts_with("numeric") {
        return existing == "numeric";
    }
    let wider: &[&str] = match column.wire {
        WireType::Bool => &["boolean"],
        WireType::Int2 => &["smallint", "integer", "bigint", "numeric"],
        WireType::Int4 => &["integer", "bigint", "numeric"],
        WireType::Int8 => &["bigint", "numeric"],
        WireType::Float4 => &["real", "double precision"],
        WireType::Float8 => &["double precision"],
        WireType::Text => &["text", "character varying"],
        WireType::Date => &["date"],
        WireType::Timestamp => &["timestamp without time zone"],
        WireType::TimestampTz => &["timestamp with time zone"],
        WireType::Bytea => &["bytea"],
    };
    wider.contains(&existing.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_map_to_the_postgres_types_a_reader_expects() {
        let declared = |t: DataType| column_type(&t).map(|c| c.declared);
        assert_eq!(declared(DataType::Int64).as_deref(), Some("bigint"));
        assert_eq!(declared(DataType::Utf8View).as_deref(), Some("text"));
        assert_eq!(
            declared(DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("+00:00".into())
            ))
            .as_deref(),
            Some("timestamp with time zone")
        );
        assert_eq!(
            declared(DataType::Decimal128(12, 2)).as_deref(),
            Some("numeric(12,2)")
        );
        assert_eq!(
            declared(DataType::List(Arc::new(arrow::datatypes::Field::new(
                "item",
                DataType::Int32,
                true
            )))),
            None
        );
    }

    #[test]
    fn an_existing_column_may_be_wider_but_not_narrower() {
        let int4 = column_type(&DataType::Int32).unwrap();
        let float8 = column_type(&DataType::Float64).unwrap();
        assert!(accepts("bigint", &int4));
        assert!(!accepts("smallint", &int4));
        assert!(!accepts("integer", &float8));
        assert!(!accepts("text", &float8));
    }
}
