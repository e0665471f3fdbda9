//! Converts batches to the Arrow types Delta stores, so any SQL output can be written and every
//! Delta reader can read it back: timestamps become microsecond UTC (Delta `timestamp`), string
//! views and large strings become plain strings (Delta `string`), unsigned integers become the
//! next signed type that holds them (Delta has no unsigned types).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// The Delta-compatible type for `data_type`, or `None` when it is already compatible.
fn delta_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => None,
        DataType::Timestamp(_, _) => Some(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(Arc::from("UTC")),
        )),
        DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
        DataType::BinaryView | DataType::LargeBinary => Some(DataType::Binary),
        DataType::Date64 => Some(DataType::Date32),
        // Delta has only signed integers (approx_distinct returns UInt64).
        DataType::UInt8 => Some(DataType::Int16),
        DataType::UInt16 => Some(DataType::Int32),
        DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
        // A struct (Spark's `window` column, a nested JSON object) is converted field by
        // field, a list or map element by element.
        DataType::Struct(fields) => {
            let converted: Vec<Field> = fields.iter().map(|f| delta_field(f)).collect();
            let same = converted
                .iter()
                .zip(fields.iter())
                .all(|(c, f)| c.data_type() == f.data_type());
            (!same).then(|| DataType::Struct(converted.into()))
        }
        DataType::List(element) | DataType::LargeList(element) => {
            let converted = delta_field(element);
            let same = matches!(data_type, DataType::List(_))
                && converted.data_type() == element.data_type();
            (!same).then(|| DataType::List(Arc::new(converted)))
        }
        DataType::Map(entries, sorted) => {
            let converted = delta_field(entries);
            (converted.data_type() != entries.data_type())
                .then(|| DataType::Map(Arc::new(converted), *sorted))
        }
        _ => None,
    }
}

/// `field` with its Delta-compatible type.
fn delta_field(field: &Field) -> Field {
    let t = delta_type(field.data_type()).unwrap_or_else(|| field.data_type().clone());
    Field::new(field.name(), t, field.is_nullable())
}

/// The schema Delta will store for batches of `schema`.
pub fn delta_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match delta_type(f.data_type()) {
                Some(t) => Arc::new(Field::new(f.name(), t, f.is_nullable())),
                None => f.clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Casts the columns of `batch` that Delta cannot store as they are. Returns the failing
/// column's name with the error.
pub fn to_delta_batch(batch: &RecordBatch) -> Result<RecordBatch, (String, ArrowError)> {
    let schema = batch.schema();
    if schema
        .fields()
        .iter()
        .all(|f| delta_type(f.data_type()).is_none())
    {
        return Ok(batch.clone());
    }
    let target = delta_schema(&schema);
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, field) in target.fields().iter().enumerate() {
        let col = batch.column(i);
        if col.data_type() == field.data_type() {
            columns.push(col.clone());
        } else {
            columns.push(cast(col, field.data_type()).map_err(|e| (field.name().clone(), e))?);
        }
    }
    RecordBatch::try_new(target, columns).map_err(|e| (String::new(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringViewArray, TimestampNanosecondArray};

    #[test]
    fn timestamps_and_string_views_become_delta_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("+00:00"))),
                true,
            ),
            Field::new("s", DataType::Utf8View, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(vec![1_000_000_000]).with_timezone("+00:00"),
                ),
                Arc::new(StringViewArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let out = to_delta_batch(&batch).unwrap();
        assert_eq!(
            out.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
        );
        assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
        assert!(!out.schema().field(1).is_nullable());
    }
}
