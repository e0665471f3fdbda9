//! Durations as written in option values: `'10 minutes'`, `'1 hour 30 minutes'`, `'500 ms'`.

use std::time::Duration;

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
