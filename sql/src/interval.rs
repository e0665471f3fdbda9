//! Durations as written in pipeline SQL: `INTERVAL '10 minutes'`, `INTERVAL '10' MINUTE`, or a
//! plain string `'10 minutes'` (Spark style).

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Value};

/// Parses `'10 minutes'`, `'1 hour 30 minutes'`, `'500 ms'`, `'2h'` into a duration.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut tokens = Vec::new();
    // Split "10minutes" and "10 minutes" alike.
    for word in text.split_whitespace() {
        let digits: String = word
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if !digits.is_empty() && digits.len() < word.len() {
            tokens.push(digits.clone());
            tokens.push(word[digits.len()..].to_string());
        } else {
            tokens.push(word.to_string());
        }
    }
    if tokens.is_empty() || tokens.len() % 2 != 0 {
        return None;
    }
    for pair in tokens.chunks(2) {
        let n: f64 = pair[0].parse().ok()?;
        let unit = unit_seconds(&pair[1])?;
        total += Duration::from_secs_f64(n * unit);
    }
    Some(total)
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 0.001,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => return None,
    })
}

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
