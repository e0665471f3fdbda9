//! How a dedupe turns each row's key columns into the bytes its state holds.
//!
//! The common key, one text or binary column (an event id), is held as its own bytes plus one
//! byte saying it is not null: half the size of Arrow's row format for a 36-character id,
//! and no encoding work. Any other key (several columns, numbers, dates) uses Arrow's row
//! format, which is unique per value for every type.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::types::is_byte_type;

/// The last byte of a plain key: the value's bytes precede it.
const VALID: u8 = 1;
/// A null plain key is this byte alone.
const NULL: u8 = 0;

/// How keys of one dedupe are encoded.
#[derive(Debug)]
pub enum KeyEncoder {
    /// One text or binary column (of this type): the value's bytes, then [`VALID`]; a null
    /// is [`NULL`].
    Plain(DataType),
    /// Any other key: Arrow's row format.
    Rows(RowConverter),
}

/// One batch's keys, row by row.
pub enum EncodedKeys {
    /// Plain keys: row `i` is `data[offsets[i]..offsets[i + 1]]`.
    Plain { data: Vec<u8>, offsets: Vec<usize> },
    /// Row-format keys.
    Rows(Rows),
}

impl EncodedKeys {
    /// Row `row`'s key.
    pub fn get(&self, row: usize) -> &[u8] {
        match self {
            EncodedKeys::Plain { data, offsets } => &data[offsets[row]..offsets[row + 1]],
            EncodedKeys::Rows(rows) => rows.row(row).data(),
        }
    }
}

impl KeyEncoder {
    /// The encoder for key columns of `types`.
    pub fn new(types: &[DataType]) -> Result<Self, ArrowError> {
        match types {
            [t] if is_byte_type(t) => Ok(KeyEncoder::Plain(t.clone())),
            _ => Ok(KeyEncoder::Rows(Self::row_converter(types)?)),
        }
    }

    fn row_converter(types: &[DataType]) -> Result<RowConverter, ArrowError> {
        RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
    }

    /// The keys of one batch's key `columns`.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<EncodedKeys, ArrowError> {
        match self {
            KeyEncoder::Rows(converter) => {
                Ok(EncodedKeys::Rows(converter.convert_columns(columns)?))
            }
            KeyEncoder::Plain(_) => {
                let column = columns.first().ok_or_else(|| {
                    ArrowError::InvalidArgumentError("a dedupe key needs a column".into())
                })?;
                Ok(encode_plain(column.as_ref()))
            }
        }
    }

    /// Keys stored in Arrow's row format (state format 1, which used it for every key) in this
    /// encoder's form: decoded to columns, then encoded again.
    pub fn from_row_format(&self, keys: &BinaryArray) -> Result<BinaryArray, ArrowError> {
        let KeyEncoder::Plain(key_type) = self else {
            return Ok(keys.clone());
        };
        let converter = Self::row_converter(std::slice::from_ref(key_type))?;
        let parser = converter.parser();
        let columns = converter.convert_rows(keys.iter().flatten().map(|k| parser.parse(k)))?;
        let encoded = self.encode(&columns)?;
        Ok(BinaryArray::from_iter_values(
            (0..keys.len()).map(|i| encoded.get(i)),
        ))
    }
}

/// One text or binary column as plain keys.
fn encode_plain(column: &dyn Array) -> EncodedKeys {
    let n = column.len();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    // The values' bytes and one marker byte per row: sized once, so the buffer never grows
    // (each growth would copy it and fault in fresh pages).
    let value_bytes = column
        .to_data()
        .buffers()
        .iter()
        .map(|b| b.len())
        .max()
        .unwrap_or(0);
    let mut data = Vec::with_capacity(value_bytes + n);
    let mut push = |value: Option<&[u8]>| {
        match value {
            Some(bytes) => {
                data.extend_from_slice(bytes);
                data.push(VALID);
            }
            None => data.push(NULL),
        }
        offsets.push(data.len());
    };
    match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::Binary => column.as_binary::<i32>().iter().for_each(&mut push),
        DataType::LargeBinary => column.as_binary::<i64>().iter().for_each(&mut push),
        DataType::BinaryView => column.as_binary_view().iter().for_each(&mut push),
        // `KeyEncoder::new` chooses plain keys only for the types above.
        other => unreachable!("plain dedupe keys of type {other}"),
    }
    EncodedKeys::Plain { data, offsets }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A text key column of `values`.
    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(arrow::array::StringArray::from(values.to_vec()))
    }

    #[test]
    fn plain_keys_tell_null_empty_and_values_apart() {
        let encoder = KeyEncoder::new(&[DataType::Utf8]).unwrap();
        let keys = encoder
            .encode(&[strings(&[
                Some("a"),
                None,
                Some(""),
                Some("a"),
                Some("a\u{1}"),
            ])])
            .unwrap();
        let got: Vec<&[u8]> = (0..5).map(|i| keys.get(i)).collect();
        assert_eq!(
            got,
            [&b"a\x01"[..], b"\x00", b"\x01", b"a\x01", b"a\x01\x01"]
        );
    }

    #[test]
    fn several_columns_use_the_row_format() {
        let encoder = KeyEncoder::new(&[DataType::Utf8, DataType::Int64]).unwrap();
        assert!(matches!(encoder, KeyEncoder::Rows(_)));
        let ids: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![1, 1]));
        let keys = encoder
            .encode(&[strings(&[Some("a"), Some("a")]), ids])
            .unwrap();
        assert_eq!(keys.get(0), keys.get(1));
    }

    #[test]
    fn row_format_keys_of_an_old_state_become_plain_keys() {
        let types = [DataType::Utf8];
        let column = strings(&[Some("event-1"), None, Some("")]);
        let old = KeyEncoder::row_converter(&types)
            .unwrap()
            .convert_columns(std::slice::from_ref(&column))
            .unwrap();
        let stored = BinaryArray::from_iter_values(old.iter().map(|r| r.as_ref().to_vec()));
        let encoder = KeyEncoder::new(&types).unwrap();
        let converted = encoder.from_row_format(&stored).unwrap();
        let fresh = encoder.encode(&[column]).unwrap();
        for i in 0..3 {
            assert_eq!(converted.value(i), fresh.get(i), "row {i}");
        }
    }
}
