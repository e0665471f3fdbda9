//! Arrow record batches in PostgreSQL's binary `COPY` format, written column value by column
//! value straight from the Arrow buffers (no per-value boxing): the fastest way to load rows
//! into a server (<https://www.postgresql.org/docs/current/sql-copy.html>, "Binary Format").

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::error::ArrowError;
use bytes::{BufMut, BytesMut};

use crate::types::{ColumnType, WireType};

/// The 11-byte signature, then flags and header extension length (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The start of a binary `COPY` stream.
pub fn header(out: &mut BytesMut) {
    out.put_slice(HEADER);
}

/// The end of a binary `COPY` stream.
pub fn trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// One column cast to the Arrow type of its wire type.
enum Column {
    Bool(BooleanArray),
    Int2(Int16Array),
    Int4(Int32Array),
    Int8(Int64Array),
    Float4(Float32Array),
    Float8(Float64Array),
    Text(StringArray),
    Date(Date32Array),
    Timestamp(TimestampMicrosecondArray),
    Bytea(BinaryArray),
}

fn typed<T: Clone + 'static>(array: &ArrayRef) -> Result<T, ArrowError> {
    array
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| ArrowError::CastError("a cast column has an unexpected type".into()))
}

impl Column {
    /// `array` cast to `target`'s Arrow type; a value that does not fit (a UInt64 above
    /// i64::MAX) is an error, never a null or a wrapped number.
    fn new(array: &ArrayRef, target: &ColumnType) -> Result<Column, ArrowError> {
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let cast = cast_with_options(array, &target.arrow, &options)?;
        Ok(match target.wire {
            WireType::Bool => Column::Bool(typed(&cast)?),
            WireType::Int2 => Column::Int2(typed(&cast)?),
            WireType::Int4 => Column::Int4(typed(&cast)?),
            WireType::Int8 => Column::Int8(typed(&cast)?),
            WireType::Float4 => Column::Float4(typed(&cast)?),
            WireType::Float8 => Column::Float8(typed(&cast)?),
            WireType::Text => Column::Text(typed(&cast)?),
            WireType::Date => Column::Date(typed(&cast)?),
            WireType::Timestamp | WireType::TimestampTz => Column::Timestamp(typed(&cast)?),
            WireType::Bytea => Column::Bytea(typed(&cast)?),
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Column::Bool(a) => a.is_null(row),
            Column::Int2(a) => a.is_null(row),
            Column::Int4(a) => a.is_null(row),
            Column::Int8(a) => a.is_null(row),
            Column::Float4(a) => a.is_null(row),
            Column::Float8(a) => a.is_null(row),
            Column::Text(a) => a.is_null(row),
            Column::Date(a) => a.is_null(row),
            Column::Timestamp(a) => a.is_null(row),
            Column::Bytea(a) => a.is_null(row),
        }
    }

    /// Writes the value's length and bytes (or -1 for NULL).
    fn put(&self, row: usize, out: &mut BytesMut) {
        if self.is_null(row) {
            out.put_i32(-1);
            return;
        }
        match self {
            Column::Bool(a) => {
                out.put_i32(1);
                out.put_u8(a.value(row) as u8);
            }
            Column::Int2(a) => {
                out.put_i32(2);
                out.put_i16(a.value(row));
            }
            Column::Int4(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row));
            }
            Column::Int8(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row));
            }
            Column::Float4(a) => {
                out.put_i32(4);
                out.put_f32(a.value(row));
            }
            Column::Float8(a) => {
                out.put_i32(8);
                out.put_f64(a.value(row));
            }
            Column::Text(a) => put_bytes(a.value(row).as_bytes(), out),
            Column::Date(a) => {
                out.put_i32(4);
                out.put_i32(a.value(row) - PG_EPOCH_DAYS);
            }
            Column::Timestamp(a) => {
                out.put_i32(8);
                out.put_i64(a.value(row) - PG_EPOCH_MICROS);
            }
            Column::Bytea(a) => put_bytes(a.value(row), out),
        }
    }
}

fn put_bytes(bytes: &[u8], out: &mut BytesMut) {
    out.put_i32(bytes.len() as i32);
    out.put_slice(bytes);
}

/// Appends every row of `batch` (columns in the order of `types`) to `out`.
pub fn encode_rows(
    batch: &RecordBatch,
    types: &[ColumnType],
    out: &mut BytesMut,
) -> Result<(), ArrowError> {
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .zip(types)
        .map(|(array, target)| Column::new(array, target))
        .collect::<Result<_, _>>()?;
    let count = columns.len() as i16;
    for row in 0..batch.num_rows() {
        out.put_i16(count);
        for column in &columns {
            column.put(row, out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::types::column_type;

    #[test]
    fn rows_are_written_in_postgres_binary_copy_layout() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec![None::<&str>])),
            ],
        )
        .unwrap();
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()).unwrap())
            .collect();
        let mut out = BytesMut::new();
        encode_rows(&batch, &types, &mut out).unwrap();
        let expected: Vec<u8> = [
            &2i16.to_be_bytes()[..],
            &8i32.to_be_bytes(),
            &7i64.to_be_bytes(),
            &(-1i32).to_be_bytes(),
        ]
        .concat();
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn an_unsigned_value_beyond_bigint_is_an_error_not_a_wrapped_number() {
        let array: ArrayRef = Arc::new(arrow::array::UInt64Array::from(vec![u64::MAX]));
        let target = column_type(&DataType::UInt64).unwrap();
        assert!(Column::new(&array, &target).is_err());
    }
}
