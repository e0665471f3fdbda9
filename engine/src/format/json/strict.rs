//! Strict JSON: a value that does not fit its declared column exactly is a dead letter.
//!
//! `arrow-json` coerces: `1.5` into an INT becomes 1, `"12"` becomes 12, `1e400` becomes
//! infinity, `01` is read as 1, `"NaN"` becomes a float, a trailing comma or a duplicate key is
//! accepted (the last value wins), `1e20` into a BIGINT saturates, and a fractional millisecond
//! timestamp is truncated. Each of those silently changes data. The fast path never accepts
//! them; a record it leaves to `arrow-json` is checked here after `arrow-json` accepted it, so
//! both paths follow the same rules. `json.lenient = true` on a source keeps the coercions.

use arrow::datatypes::{DataType, Schema};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Why a record does not fit its schema exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum StrictProblem {
    /// Not strict JSON (trailing comma, `01`, `1e400`, a duplicate key, or plainly broken).
    Syntax(String),
    /// Valid JSON with a value that does not fit its column.
    Value(String),
}

impl std::fmt::Display for StrictProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrictProblem::Syntax(e) => write!(f, "not strict JSON: {e}"),
            StrictProblem::Value(e) => write!(f, "{e}"),
        }
    }
}

/// Why `record` does not fit `schema` exactly, or `None` when it does.
pub fn strict_problem(record: &[u8], schema: &Schema) -> Option<StrictProblem> {
    let fields = match parse_object(record) {
        Ok(fields) => fields,
        Err(e) => return Some(StrictProblem::Syntax(e)),
    };
    for (name, value) in &fields {
        let Ok(field) = schema.field_with_name(name) else {
            continue;
        };
        if let Some(problem) = nested_in_scalar(name, value, field.data_type()) {
            return Some(StrictProblem::Value(problem));
        }
        if let Some(problem) = value_problem(value, field.data_type()) {
            return Some(StrictProblem::Value(format!("field `{name}`: {problem}")));
        }
    }
    None
}

/// A JSON array or object sent to a column declared as a scalar, said with what to declare
/// instead and the value as sent; `None` for anything else. Strict decoding and arrow-json's
/// (lenient) rejections share this message.
pub fn nested_in_scalar(name: &str, value: &Value, data_type: &DataType) -> Option<String> {
    let nested_column = matches!(
        data_type,
        DataType::List(_) | DataType::Struct(_) | DataType::Map(_, _)
    );
    if nested_column || !(value.is_array() || value.is_object()) {
        return None;
    }
    let (shape, declare) = match value.is_array() {
        true => ("a JSON array", "ARRAY<...>"),
        false => ("a JSON object", "STRUCT<...> or MAP<TEXT, ...>"),
    };
    Some(format!(
        "field `{name}` is {shape}, but the column is declared {}; declare it as {declare} to \
         read it: {value}",
        crate::types::sql_type_name(data_type)
    ))
}

/// The top-level keys and values of a JSON object; a duplicate key is an error.
fn parse_object(record: &[u8]) -> Result<Vec<(String, Value)>, String> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields: Vec<(String, Value)> = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                if fields.iter().any(|(k, _)| *k == key) {
                    return Err(serde::de::Error::custom(format!(
                        "key `{key}` appears twice"
                    )));
                }
                fields.push((key, value));
            }
            Ok(fields)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(record);
    let fields = de.deserialize_map(Fields).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(fields)
}

/// Why `value` does not fit `data_type` exactly.
fn value_problem(value: &Value, data_type: &DataType) -> Option<String> {
    let integer_range = |min: i64, max: i64| match value {
        Value::Number(n) => match whole(n) {
            Some(v) if (min..=max).contains(&v) => None,
            Some(_) => Some(format!("{n} does not fit {data_type}")),
            None if n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                Some(format!("{n} does not fit {data_type}"))
            }
            None => Some(format!("{n} is not a whole number")),
        },
        _ => type_mismatch(value, "a whole number"),
    };
    match (value, data_type) {
        (Value::Null, _) => None,
        (_, DataType::Int16) => integer_range(i16::MIN.into(), i16::MAX.into()),
        (_, DataType::Int32) => integer_range(i32::MIN.into(), i32::MAX.into()),
        (_, DataType::Int64) => integer_range(i64::MIN, i64::MAX),
        (Value::Number(_), DataType::Float32 | DataType::Float64) => None,
        (_, DataType::Float32 | DataType::Float64) => type_mismatch(value, "a number"),
        (Value::String(_), DataType::Utf8) => None,
        (_, DataType::Utf8) => type_mismatch(value, "a string"),
        // A date is an ISO string or whole days since 1970-01-01.
        (Value::String(_), DataType::Date32) => None,
        (Value::Number(_), DataType::Date32) => integer_range(i32::MIN.into(), i32::MAX.into()),
        (_, DataType::Date32) => type_mismatch(value, "a date string or whole days"),
        (Value::Bool(_), DataType::Boolean) => None,
        (_, DataType::Boolean) => type_mismatch(value, "true or false"),
        (Value::String(_), DataType::Timestamp(_, _)) => None,
        (Value::Number(n), DataType::Timestamp(_, _)) => match whole(n) {
            Some(_) => None,
            None => Some(format!(
                "{n} is not a whole number of milliseconds (or does not fit a timestamp)"
            )),
        },
        (_, DataType::Timestamp(_, _)) => {
            type_mismatch(value, "an RFC 3339 string or epoch milliseconds")
        }
        _ => None,
    }
}

/// A JSON number as an integer when it is one exactly (`7`, `-0`, `7.0`, `1.7e12`).
fn whole(n: &serde_json::Number) -> Option<i64> {
    if let Some(v) = n.as_i64() {
        return Some(v);
    }
    let f = n.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, which does not fit: compare strictly below it.
    let fits = f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64;
    fits.then_some(f as i64)
}

fn type_mismatch(value: &Value, wanted: &str) -> Option<String> {
    let found = match value {
        Value::String(s) => format!("the string {s:?}"),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        Value::Array(_) => "a JSON array".to_string(),
        Value::Object(_) => "a JSON object".to_string(),
        Value::Null => "null".to_string(),
    };
    Some(format!("expected {wanted}, found {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("b", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ])
    }

    #[test]
    fn what_does_not_fit_exactly_is_named() {
        let cases = [
            (r#"{"i":1.5}"#, "not a whole number"),
            (r#"{"i":"12"}"#, "expected a whole number"),
            (r#"{"f":1e400}"#, "not strict JSON"),
            (r#"{"i":01}"#, "not strict JSON"),
            (r#"{"f":"NaN"}"#, "expected a number"),
            (r#"{"f":"Infinity"}"#, "expected a number"),
            (r#"{"s":"t7",}"#, "not strict JSON"),
            (r#"{"i":1,"i":2}"#, "appears twice"),
            (r#"{"b":1e20}"#, "does not fit"),
            (r#"{"b":18446744073709551615}"#, "does not fit"),
            (r#"{"i":3000000000}"#, "does not fit"),
            (r#"{"t":1.5}"#, "whole number of milliseconds"),
            (r#"{"t":1e30}"#, "whole number of milliseconds"),
        ];
        for (record, expected) in cases {
            let problem = strict_problem(record.as_bytes(), &schema()).map(|p| p.to_string());
            assert!(
                problem.as_deref().is_some_and(|p| p.contains(expected)),
                "{record}: {problem:?}"
            );
        }
        for good in [
            r#"{"i":1,"b":-5,"f":1.5,"s":"x","t":1700000000000}"#,
            r#"{"f":2,"t":"2024-03-01T00:00:00Z","other":{"x":[1,2]}}"#,
            r#"{"i":null}"#,
            r#"{"i":-0,"b":7.0,"t":1.7e12}"#,
        ] {
            assert_eq!(strict_problem(good.as_bytes(), &schema()), None, "{good}");
        }
    }
}
