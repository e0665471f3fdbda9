//! `${VAR}` and `${VAR:-default}` substitution in pipeline files, line by line so that
//! positions in later errors still point at the right line.

use std::path::Path;

use crate::error::{Location, SqlError};

/// Substitutes environment variables using `lookup`; an unset variable without a default is an
/// error at its position.
pub fn substitute(
    file: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, SqlError> {
    let mut out = String::with_capacity(text.len());
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut col = 1u64;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            col += rest[..start].chars().count() as u64;
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(SqlError::new(
                    Location {
                        file: file.to_path_buf(),
                        line: line_no as u64 + 1,
                        column: col,
                    },
                    "unterminated `${`",
                )
                .with_hint("write ${NAME} or ${NAME:-default}"));
            };
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(SqlError::new(
                        Location {
                            file: file.to_path_buf(),
                            line: line_no as u64 + 1,
                            column: col,
                        },
                        format!("environment variable `{name}` is not set"),
                    )
                    .with_hint(format!("export {name}=... or write ${{{name}:-default}}")))
                }
            }
            col += body.chars().count() as u64 + 3;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "LAKE").then(|| "/data".to_string())
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let s = substitute(Path::new("p.sql"), "a ${LAKE} b ${X:-7}\n${LAKE}", env).unwrap();
        assert_eq!(s, "a /data b 7\n/data");
    }

    #[test]
    fn unset_variable_points_at_its_position() {
        let e = substitute(Path::new("p.sql"), "x\n  path = '${NOPE}'", env).unwrap_err();
        assert_eq!((e.location.line, e.location.column), (2, 11));
        assert!(e.to_string().contains("NOPE"));
    }
}
