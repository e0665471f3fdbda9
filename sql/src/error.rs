//! SQL errors: a position in a pipeline file, what is wrong, and a hint saying what to do.

use std::fmt;
use std::path::PathBuf;

/// A position in a pipeline file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One mistake in a pipeline file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SqlError {
    /// Where the mistake is.
    pub location: Location,
    /// What is wrong.
    pub message: String,
    /// What to write instead, when we know.
    pub hint: Option<String>,
    /// The offending source line, for the caret display.
    pub source_line: Option<String>,
}

impl SqlError {
    /// An error at `location`.
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        SqlError {
            location,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl SqlError {
    /// The same text labelled as a warning: something that runs but may not do what the
    /// author expects (`weir validate`, `run` and `explain` print these and go on).
    pub fn as_warning(&self) -> impl fmt::Display + '_ {
        Labelled(self, "warning")
    }
}

/// A [`SqlError`] shown with a label (`error`, `warning`).
struct Labelled<'a>(&'a SqlError, &'static str);

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Labelled(self, "error").fmt(f)
    }
}

impl fmt::Display for Labelled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (error, label) = (self.0, self.1);
        write!(f, "{}: {label}: {}", error.location, error.message)?;
        if let Some(line) = &error.source_line {
            // `${PG_URL}` and the like are substituted before parsing: a line may hold a
            // password, which is never shown.
            let line = &mask_passwords(line);
            // A long line (generated SQL) is shown around the column only.
            let col = error.location.column.saturating_sub(1) as usize;
            let skip = col.saturating_sub(SHOWN_BEFORE_COLUMN);
            let shown: String = line.chars().skip(skip).take(SHOWN_LINE).collect();
            let (before, after) = (
                if skip > 0 { "..." } else { "" },
                if line.chars().count() > skip + SHOWN_LINE {
                    "..."
                } else {
                    ""
                },
            );
            let pad: String = before
                .chars()
                .chain(line.chars().skip(skip).take(col - skip))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n    | {before}{shown}{after}\n    | {pad}^")?;
        }
        if let Some(hint) = &error.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// `line` with the password of every `scheme://user:password@host` URL and every
/// `password=...` value replaced by as many asterisks (a caret under the line still points
/// at its column).
pub fn mask_passwords(line: &str) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    let ends_value = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '&' | ';' | ',');
    let mut i = 0;
    while i + 3 <= chars.len() {
        if chars[i..i + 3] == [':', '/', '/'] {
            // The authority: up to '/', a quote or a space; its password between the first
            // ':' and the last '@'.
            let start = i + 3;
            let end = (start..chars.len())
                .find(|&j| chars[j] == '/' || ends_value(chars[j]))
                .unwrap_or(chars.len());
            let at = (start..end).rev().find(|&j| chars[j] == '@');
            let colon = at.and_then(|at| (start..at).find(|&j| chars[j] == ':'));
            if let (Some(colon), Some(at)) = (colon, at) {
                chars[colon + 1..at].iter_mut().for_each(|c| *c = '*');
            }
            i = end.max(i + 1);
            continue;
        }
        let key: String = chars[i..(i + 9).min(chars.len())].iter().collect();
        if key.eq_ignore_ascii_case("password=") {
            let start = i + 9;
            let end = (start..chars.len())
                .find(|&j| ends_value(chars[j]))
                .unwrap_or(chars.len());
            chars[start..end].iter_mut().for_each(|c| *c = '*');
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    chars.into_iter().collect()
}

/// How much of a source line an error shows, and how much of it before the column.
const SHOWN_LINE: usize = 160;
const SHOWN_BEFORE_COLUMN: usize = 80;

/// All the mistakes found in a pipeline (planning goes on after the first where it can).
#[derive(Debug, Clone, thiserror::Error)]
pub struct SqlErrors(pub Vec<SqlError>);

impl fmt::Display for SqlErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<SqlError> for SqlErrors {
    fn from(e: SqlError) -> Self {
        SqlErrors(vec![e])
    }
}

#[cfg(test)]
mod password_tests {
    use super::mask_passwords;

    #[test]
    fn passwords_in_urls_and_key_values_are_masked_in_place() {
        assert_eq!(
            mask_passwords("url = 'postgres://weir:s3cr@t@db:5432/x', table = 't'"),
            "url = 'postgres://weir:******@db:5432/x', table = 't'"
        );
        assert_eq!(
            mask_passwords("url = 'host=db user=w password=hunter2 dbname=x'"),
            "url = 'host=db user=w password=******* dbname=x'"
        );
        let plain = "path = 's3://bucket/key', servers = 'a:9092'";
        assert_eq!(mask_passwords(plain), plain);
    }
}
