//! WITH options as written in `CREATE SOURCE ... WITH (...)` and `CREATE TABLE ... WITH (...)`.
//!
//! Values may be written as strings or numbers; connectors take what they understand with typed
//! getters and then call [`Options::finish`], which rejects anything left over, so a typo in an
//! option name is an error with a suggestion instead of being silently ignored.

use std::collections::BTreeMap;

use crate::error::{EngineError, Result};

/// The options of one statement, keyed by lower-cased name, with the keys not yet consumed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    values: BTreeMap<String, String>,
    taken: Vec<String>,
}

impl Options {
    /// Options from `(key, value)` pairs; keys are matched case-insensitively.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Options {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            taken: Vec::new(),
        }
    }

    /// Takes a string option.
    pub fn take_str(&mut self, key: &str) -> Option<String> {
        self.taken.push(key.to_string());
        self.values.remove(key)
    }

    /// Takes a required string option.
    pub fn require_str(&mut self, key: &str, hint: &str) -> Result<String> {
        self.take_str(key)
            .ok_or_else(|| EngineError::option_hint(key, "is required", hint))
    }

    /// Takes an unsigned integer option (`events = 1000` or `events = '1_000'`).
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take_str(key) {
            None => Ok(None),
            Some(v) => v
                .replace('_', "")
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| {
                    EngineError::option_hint(
                        key,
                        format!("expected a whole number, got '{v}'"),
                        format!("write e.g. {key} = 1000"),
                    )
                }),
        }
    }

    /// Takes a duration option (`idle_timeout = '30 seconds'`, `'5 minutes'`, `'500 ms'`).
    pub fn take_duration(&mut self, key: &str) -> Result<Option<std::time::Duration>> {
        match self.take_str(key) {
            None => Ok(None),
            Some(v) => crate::duration::parse_duration(&v)
                .map(Some)
                .ok_or_else(|| {
                    EngineError::option_hint(
                        key,
                        format!("'{v}' is not a duration"),
                        format!("write e.g. {key} = '30 seconds'"),
                    )
                }),
        }
    }

    /// Takes a size in bytes (`target_file_size = '128MB'`, `'1 GiB'`, `'500kB'`, `1048576`):
    /// kB, MB, GB are powers of 1000, KiB, MiB, GiB powers of 1024 (case does not matter).
    pub fn take_bytes(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take_str(key) {
            None => Ok(None),
            Some(v) => parse_bytes(&v).map(Some).ok_or_else(|| {
                EngineError::option_hint(
                    key,
                    format!("'{v}' is not a size"),
                    format!("write e.g. {key} = '128MB' (or '1GiB', or a number of bytes)"),
                )
            }),
        }
    }

    /// Takes a fraction option in `[0, 1]` (`late_ratio = 0.01`).
    pub fn take_ratio(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take_str(key) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
                _ => Err(EngineError::option_hint(
                    key,
                    format!("expected a number between 0 and 1, got '{v}'"),
                    format!("write e.g. {key} = 0.01"),
                )),
            },
        }
    }

    /// Takes an option that must be one of `choices`.
    pub fn take_choice(&mut self, key: &str, choices: &[&str]) -> Result<Option<String>> {
        match self.take_str(key) {
            None => Ok(None),
            Some(v) if choices.iter().any(|c| c.eq_ignore_ascii_case(&v)) => {
                Ok(Some(v.to_ascii_lowercase()))
            }
            Some(v) => Err(EngineError::option_hint(
                key,
                format!("'{v}' is not supported"),
                format!("use one of: {}", choices.join(", ")),
            )),
        }
    }

    /// Takes every option whose key starts with `prefix`, returning the keys without it
    /// (`kafka.security.protocol` -> `security.protocol`).
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let keys: Vec<String> = self
            .values
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let v = self.values.remove(&k)?;
                self.taken.push(k.clone());
                Some((k[prefix.len()..].to_string(), v))
            })
            .collect()
    }

    /// Fails on the first option nobody took, suggesting the closest known key.
    pub fn finish(self, what: &str) -> Result<()> {
        if let Some(key) = self.values.keys().next() {
            let suggestion = closest(key, &self.taken)
                .map(|k| format!("Did you mean `{k}`? "))
                .unwrap_or_default();
            let mut known = self.taken.clone();
            known.sort();
            known.dedup();
            return Err(EngineError::unknown_option(
                key.clone(),
                format!("is not an option of {what}"),
                format!("{suggestion}Known options: {}", known.join(", ")),
            ));
        }
        Ok(())
    }
}

/// The known key closest to `key` by edit distance, if it is close enough to be a typo.
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance between two short strings.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn numbers_accept_strings_and_underscores() {
        let mut o = opts(&[("events", "1_000"), ("max", "'x'")]);
        assert_eq!(o.take_u64("events").unwrap(), Some(1000));
        assert!(o.take_u64("max").is_err());
    }

    #[test]
    fn leftover_option_is_an_error_with_suggestion() {
        let mut o = opts(&[("evnts", "10")]);
        let _ = o.take_u64("events");
        let err = o.finish("connector 'generator'").unwrap_err().to_string();
        assert!(err.contains("`evnts`"), "{err}");
        assert!(err.contains("Did you mean `events`?"), "{err}");
    }
}

/// A size in bytes: a number, optionally followed by a unit (see [`Options::take_bytes`]).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod bytes_tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_bytes("128MB"), Some(128_000_000));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("1.5kb"), Some(1_500));
        assert_eq!(parse_bytes("1_048_576"), Some(1_048_576));
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(parse_bytes("0"), None);
    }
}
