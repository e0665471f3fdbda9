//! `${VAR}` and `${VAR:-default}` substitution in pipeline files, line by line so that
//! positions in later errors still point at the right line.

use std::path::Path;

use crate::error::{Location, SqlError};

/// Substitutes environment variables using `lookup`, as values, never as SQL: inside a quoted
/// string the value's quotes are doubled, so it stays one string; outside quotes the value must
/// be a number or a name (`1000`, `-5`, `events_v2`); in comments nothing is substituted. An
/// unset variable without a default is an error at its position.
pub fn substitute(
    file: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, SqlError> {
    let mut out = String::with_capacity(text.len());
    let mut context = Context::Code;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let at = |col: usize| Location {
            file: file.to_path_buf(),
            line: line_no as u64 + 1,
            column: col as u64 + 1,
        };
        if context == Context::LineComment {
            context = Context::Code;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            match context {
                Context::LineComment => {}
                Context::BlockComment if c == '*' && next == Some('/') => {
                    out.push_str("*/");
                    context = Context::Code;
                    i += 2;
                    continue;
                }
                Context::BlockComment => {}
                Context::Code if c == '-' && next == Some('-') => context = Context::LineComment,
                Context::Code if c == '/' && next == Some('*') => context = Context::BlockComment,
                Context::Code | Context::Quoted if c == '$' && next == Some('{') => {
                    let rest: String = chars[i + 2..].iter().collect();
                    let Some(end) = rest.find('}') else {
                        return Err(SqlError::new(at(i), "unterminated `${`")
                            .with_hint("write ${NAME} or ${NAME:-default}"));
                    };
                    let body = &rest[..end];
                    let value = variable_value(body, &lookup)
                        .map_err(|e| SqlError::new(at(i), e.0).with_hint(e.1))?;
                    if context == Context::Quoted {
                        out.push_str(&value.replace('\'', "''"));
                    } else if is_plain_value(&value) {
                        out.push_str(&value);
                    } else {
                        let name = body.split(":-").next().unwrap_or(body);
                        return Err(SqlError::new(
                            at(i),
                            format!(
                                "the value of `{name}` ({value:?}) is not a number or a name, \
                                 and outside quotes it would be read as SQL"
                            ),
                        )
                        .with_hint(format!("put it in quotes: '${{{name}}}'")));
                    }
                    i += 2 + body.chars().count() + 1;
                    continue;
                }
                Context::Code if c == '\'' => context = Context::Quoted,
                Context::Quoted if c == '\'' => context = Context::Code,
                Context::Code | Context::Quoted => {}
            }
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// Where in the SQL text a character is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Context {
    Code,
    Quoted,
    LineComment,
    BlockComment,
}

/// The value of `NAME` or `NAME:-default`, or what is wrong and what to do.
fn variable_value(
    body: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, (String, String)> {
    let (name, default) = match body.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (body, None),
    };
    match (lookup(name), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err((
            format!("environment variable `{name}` is not set"),
            format!("export {name}=... or write ${{{name}:-default}}"),
        )),
    }
}

/// A number or a name: safe to put into SQL outside quotes.
fn is_plain_value(value: &str) -> bool {
    let body = value.strip_prefix('-').unwrap_or(value);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "LAKE").then(|| "/data".to_string())
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let s = substitute(Path::new("p.sql"), "a '${LAKE}' b ${X:-7}\n'${LAKE}'", env).unwrap();
        assert_eq!(s, "a '/data' b 7\n'/data'");
    }

    #[test]
    fn values_stay_values() {
        let lookup = |name: &str| match name {
            "EVIL" => Some("1); CREATE TABLE x AS SELECT 1; --".to_string()),
            "QUOTE" => Some("a'; DROP".to_string()),
            _ => None,
        };
        let p = Path::new("p.sql");
        let e = substitute(p, "events = ${EVIL}", lookup).unwrap_err();
        assert!(e.to_string().contains("would be read as SQL"), "{e}");
        assert_eq!(
            substitute(p, "path = '${QUOTE}'", lookup).unwrap(),
            "path = 'a''; DROP'"
        );
        // Comments are not substituted, so an unset variable there is no error.
        assert_eq!(
            substitute(p, "-- ${NOPE}\n/* ${NOPE} */ x", lookup).unwrap(),
            "-- ${NOPE}\n/* ${NOPE} */ x"
        );
    }

    #[test]
    fn unset_variable_points_at_its_position() {
        let e = substitute(Path::new("p.sql"), "x\n  path = '${NOPE}'", env).unwrap_err();
        assert_eq!((e.location.line, e.location.column), (2, 11));
        assert!(e.to_string().contains("NOPE"));
    }
}
