//! Durations as written in pipeline SQL: `INTERVAL '10 minutes'`, `INTERVAL '10' MINUTE`, or a
//! plain string `'10 minutes'` (Spark style).

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Value};

pub use weir_engine::duration::parse_duration;

/// The duration of an `INTERVAL` literal or a string literal expression.
pub fn expr_duration(expr: &Expr) -> Option<Duration> {
    match expr {
        Expr::Interval(interval) => {
            let text = string_of(&interval.value)?;
            match &interval.leading_field {
                Some(field) => parse_duration(&format!("{text} {field}")),
                None => parse_duration(&text),
            }
        }
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => parse_duration(s),
            _ => None,
        },
        Expr::Nested(inner) => expr_duration(inner),
        _ => None,
    }
}

fn string_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        assert_eq!(parse_duration("10 minutes"), Some(Duration::from_secs(600)));
        assert_eq!(
            parse_duration("1 hour 30 minutes"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30 seconds"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1 DAY"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("ten minutes"), None);
        assert_eq!(parse_duration("10 parsecs"), None);
    }
}
