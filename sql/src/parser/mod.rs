//! Parses pipeline files into statements: `CREATE SOURCE`, `CREATE TABLE ... AS SELECT`,
//! `CREATE VIEW ... AS SELECT`. Queries are parsed by sqlparser (the one DataFusion uses) with
//! positions relative to the whole file, so planning errors can point into the file too.

use datafusion::sql::sqlparser::ast::ObjectName;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{Location, SqlError};
use weir_engine::types::SqlType;

mod columns;

pub use crate::pipeline_files::{load_pipeline_files, load_pipeline_files_with_env, PipelineFile};
pub use crate::statements::{
    ColumnSpec, OptionSpec, ReferenceStatement, SourceStatement, Statement, StreamKind,
    StreamStatement, WatermarkSpec,
};

/// Parses one file into statements.
pub fn parse_file(file: &PipelineFile) -> Result<Vec<Statement>, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, &file.text)
        .tokenize_with_location()
        .map_err(|e| {
            file.error_at(
                Location {
                    file: file.path.clone(),
                    line: e.location.line,
                    column: e.location.column,
                },
                e.message.clone(),
            )
        })?;
    let tokens = unwrap_flink_window_tvfs(tokens);
    let kinds: Vec<Token> = tokens.iter().map(|t| t.token.clone()).collect();
    let mut p = StatementParser {
        file,
        parser: Parser::new(&dialect).with_tokens_with_locations(tokens),
        tokens: kinds,
        pending_close_angle: false,
    };
    let mut statements = Vec::new();
    loop {
        while p.parser.consume_token(&Token::SemiColon) {}
        if p.parser.peek_token().token == Token::EOF {
            break;
        }
        statements.push(p.statement()?);
        let next = p.parser.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            return Err(file
                .error(
                    next.span,
                    format!("unexpected `{}` after the statement", next.token),
                )
                .with_hint("end each statement with `;`"));
        }
    }
    Ok(statements)
}

/// Accepts Flink's spelling of window functions,
/// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))`, by dropping the `TABLE(...)`
/// wrapper, the `TABLE` before the input and the `DESCRIPTOR(...)` around the time column, which
/// leaves Weir's `TUMBLE(t, ts, INTERVAL '1' MINUTE)`. Tokens keep their positions, so errors
/// still point into the original text.
fn unwrap_flink_window_tvfs(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_word = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(word) if word.value.eq_ignore_ascii_case(w));
    // Indices of the tokens that are not whitespace or comments.
    let code: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let at = |k: usize| code.get(k).map(|&i| &tokens[i]);
    // The index (into `code`) of the parenthesis closing the one at `open`.
    let closing = |open: usize| {
        let mut depth = 0usize;
        for (k, &i) in code.iter().enumerate().skip(open) {
            match tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(k);
                    }
                }
                _ => {}
            }
        }
        None
    };
    let mut drop = std::collections::HashSet::new();
    for k in 0..code.len() {
        let pattern = at(k).is_some_and(|t| is_word(t, "table"))
            && at(k + 1).is_some_and(|t| t.token == Token::LParen)
            && at(k + 2)
                .is_some_and(|t| ["tumble", "hop", "session"].iter().any(|w| is_word(t, w)))
            && at(k + 3).is_some_and(|t| t.token == Token::LParen)
            && at(k + 4).is_some_and(|t| is_word(t, "table"));
        if !pattern {
            continue;
        }
        let (Some(outer_end), Some(call_end)) = (closing(k + 1), closing(k + 3)) else {
            continue;
        };
        drop.extend([k, k + 1, k + 4, outer_end]);
        for j in k + 5..call_end {
            if at(j).is_some_and(|t| is_word(t, "descriptor"))
                && at(j + 1).is_some_and(|t| t.token == Token::LParen)
            {
                if let Some(end) = closing(j + 1) {
                    drop.extend([j, j + 1, end]);
                }
            }
        }
    }
    let dropped: std::collections::HashSet<usize> = drop.iter().map(|&k| code[k]).collect();
    tokens
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, t)| t)
        .collect()
}

struct StatementParser<'a> {
    file: &'a PipelineFile,
    parser: Parser<'a>,
    /// The file's tokens, as the parser indexes them (for scans ahead of the parser).
    tokens: Vec<Token>,
    /// A `>>` closed two nested types (`ARRAY<STRUCT<...>>`): the second `>` is still due.
    pending_close_angle: bool,
}

impl StatementParser<'_> {
    fn statement(&mut self) -> Result<Statement, SqlError> {
        let start = self.parser.peek_token();
        if !self.parser.parse_keyword(Keyword::CREATE) {
            return Err(self
                .file
                .error(start.span, format!("expected CREATE, found `{}`", start.token))
                .with_hint("a pipeline file holds CREATE SOURCE, CREATE TABLE ... AS SELECT and CREATE VIEW ... AS SELECT statements"));
        }
        let _ = self.parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        let what = self.parser.next_token();
        let word = match &what.token {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => String::new(),
        };
        match word.as_str() {
            "SOURCE" => self.source(start.span).map(|s| Statement::Source(Box::new(s))),
            "REFERENCE" if self.parser.parse_keyword(Keyword::TABLE) => self
                .reference(start.span)
                .map(|r| Statement::Reference(Box::new(r))),
            "TABLE" => self.stream(StreamKind::Table, start.span).map(Statement::Stream),
            "VIEW" | "STREAM" => self.stream(StreamKind::View, start.span).map(Statement::Stream),
            "MATERIALIZED" if self.parser.parse_keyword(Keyword::VIEW) => {
                self.stream(StreamKind::Table, start.span).map(Statement::Stream)
            }
            _ => Err(self
                .file
                .error(what.span, format!("expected SOURCE, TABLE, VIEW or REFERENCE TABLE after CREATE, found `{}`", what.token))
                .with_hint("CREATE SOURCE name (...) WITH (connector = ...), CREATE TABLE name AS SELECT ..., CREATE VIEW name AS SELECT ..., CREATE REFERENCE TABLE name WITH (connector = ...)")),
        }
    }

    /// A column type: a scalar type name (`DOUBLE PRECISION`, `VARCHAR(20)`) or a nested
    /// `ARRAY<T>`, `STRUCT<name[:] T, ...>`, `ROW<name T, ...>` / `ROW(name T, ...)` or
    /// `MAP<K, V>`.
    fn parse_column_type(&mut self) -> Result<SqlType, SqlError> {
        let tok = self.parser.next_token();
        let Token::Word(word) = &tok.token else {
            return Err(self
                .file
                .error(
                    tok.span,
                    format!("expected a column type, found `{}`", tok.token),
                )
                .with_hint(format!(
                    "use one of {}",
                    weir_engine::types::SUPPORTED_TYPES
                )));
        };
        match word.value.to_ascii_uppercase().as_str() {
            "ARRAY" => {
                self.expect_open_angle()?;
                let element = self.parse_column_type()?;
                self.expect_close_angle()?;
                Ok(SqlType::Array(Box::new(element)))
            }
            "MAP" => {
                self.expect_open_angle()?;
                let key = self.parse_column_type()?;
                self.expect_token(Token::Comma, "`,` between a MAP's key and value types")?;
                let value = self.parse_column_type()?;
                self.expect_close_angle()?;
                Ok(SqlType::Map(Box::new(key), Box::new(value)))
            }
            "STRUCT" | "ROW" => {
                let parenthesised = self.parser.consume_token(&Token::LParen);
                if !parenthesised {
                    self.expect_open_angle()?;
                }
                let mut fields = Vec::new();
                loop {
                    let name = self
                        .parser
                        .parse_identifier()
                        .map_err(|e| self.sql_err(e))?;
                    let _ = self.parser.consume_token(&Token::Colon);
                    fields.push((name.value, self.parse_column_type()?));
                    if !self.parser.consume_token(&Token::Comma) {
                        break;
                    }
                }
                if parenthesised {
                    self.expect_token(Token::RParen, "`)` after the ROW's fields")?;
                } else {
                    self.expect_close_angle()?;
                }
                Ok(SqlType::Struct(fields))
            }
            _ => {
                let mut name = word.value.clone();
                // Multi-word names (DOUBLE PRECISION, TIMESTAMP WITH TIME ZONE) and parameters.
                loop {
                    let next = self.parser.peek_token();
                    match &next.token {
                        Token::Word(w)
                            if ["PRECISION", "VARYING", "WITH", "WITHOUT", "TIME", "ZONE"]
                                .contains(&w.value.to_ascii_uppercase().as_str()) =>
                        {
                            name.push(' ');
                            name.push_str(&w.value);
                            self.parser.next_token();
                        }
                        Token::LParen => {
                            name.push('(');
                            self.parser.next_token();
                            loop {
                                let t = self.parser.next_token();
                                match t.token {
                                    Token::RParen => break,
                                    Token::EOF => {
                                        return Err(self
                                            .file
                                            .error(t.span, "unclosed `(` in a column type"))
                                    }
                                    other => name.push_str(&other.to_string()),
                                }
                            }
                            name.push(')');
                        }
                        _ => break,
                    }
                }
                Ok(SqlType::Named(name))
            }
        }
    }

    fn expect_open_angle(&mut self) -> Result<(), SqlError> {
        self.expect_token(Token::Lt, "`<` and the nested type, e.g. ARRAY<TEXT>")
    }

    /// Takes a `>`, or half of a `>>` that closes two nested types at once.
    fn expect_close_angle(&mut self) -> Result<(), SqlError> {
        if self.pending_close_angle {
            self.pending_close_angle = false;
            return Ok(());
        }
        if self.parser.consume_token(&Token::ShiftRight) {
            self.pending_close_angle = true;
            return Ok(());
        }
        self.expect_token(Token::Gt, "`>` to close the nested type")
    }

    fn expect_token(&mut self, token: Token, what: &str) -> Result<(), SqlError> {
        if self.parser.consume_token(&token) {
            return Ok(());
        }
        let found = self.parser.peek_token();
        Err(self
            .file
            .error(
                found.span,
                format!("expected {what}, found `{}`", found.token),
            )
            .with_hint("ARRAY<STRUCT<product_id: TEXT, quantity: INT>>, MAP<TEXT, DOUBLE>"))
    }

    /// Refuses a query with more binary operators than [`MAX_OPERATORS`] before parsing it:
    /// a generated 10,000-term `OR` makes a syntax tree 10,000 levels deep, which recursive
    /// walks (and DataFusion's optimizer, for minutes) cannot handle. Counted on the tokens up
    /// to the statement's end, so nothing deep is ever built.
    fn check_operator_count(&self) -> Result<(), SqlError> {
        let start = self.parser.peek_token();
        let mut operators = 0usize;
        for token in self.tokens.iter().skip(self.parser.index()) {
            match token {
                Token::EOF | Token::SemiColon => break,
                Token::Word(w) if matches!(w.keyword, Keyword::OR | Keyword::AND) => operators += 1,
                Token::Plus
                | Token::Minus
                | Token::Mul
                | Token::Div
                | Token::StringConcat
                | Token::Eq
                | Token::Neq
                | Token::Lt
                | Token::Gt
                | Token::LtEq
                | Token::GtEq => operators += 1,
                _ => {}
            }
        }
        if operators > MAX_OPERATORS {
            return Err(self
                .file
                .error(
                    start.span,
                    format!(
                        "the query has {operators} operators (more than {MAX_OPERATORS}); \
                         expressions this long nest too deep to plan"
                    ),
                )
                .with_hint(
                    "a long chain of OR / AND is better written `x IN (...)`, or as a join \
                     with a VALUES list",
                ));
        }
        Ok(())
    }

    /// sqlparser's errors carry their position only in their text ("... at Line: 3, Column:
    /// 7"), so it is read back from there (falling back to the parser's next token).
    fn sql_err(&self, e: ParserError) -> SqlError {
        let text = e.to_string();
        let (line, column) = position_in_message(&text).unwrap_or_else(|| {
            let s = self.parser.peek_token().span.start;
            (s.line, s.column)
        });
        let message = text
            .split(" at Line:")
            .next()
            .unwrap_or(&text)
            .trim_start_matches("sql parser error: ")
            .to_string();
        self.file.error_at(
            Location {
                file: self.file.path.clone(),
                line,
                column,
            },
            message,
        )
    }

    fn name(&mut self) -> Result<(String, Span), SqlError> {
        let span = self.parser.peek_token().span;
        let name = self
            .parser
            .parse_object_name(false)
            .map_err(|e| self.sql_err(e))?;
        Ok((object_name_to_string(&name), span))
    }

    fn source(&mut self, span: Span) -> Result<SourceStatement, SqlError> {
        let (name, name_span) = self.name()?;
        let open = self.parser.peek_token();
        if !self.parser.consume_token(&Token::LParen) {
            return Err(self
                .file
                .error(open.span, format!("expected `(` and the source's columns, found `{}`", open.token))
                .with_hint("CREATE SOURCE events (event_id TEXT NOT NULL, amount DOUBLE, event_time TIMESTAMP) WITH (...)"));
        }
        let (columns, watermark) = self.column_list()?;
        let options = self.options()?;
        Ok(SourceStatement {
            name,
            name_span,
            columns,
            watermark,
            options,
            span,
        })
    }

    fn stream(&mut self, kind: StreamKind, span: Span) -> Result<StreamStatement, SqlError> {
        let _ = self
            .parser
            .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let (name, name_span) = self.name()?;
        let options = self.options()?;
        let as_token = self.parser.peek_token();
        if !self.parser.parse_keyword(Keyword::AS) {
            return Err(self
                .file
                .error(
                    as_token.span,
                    format!("expected AS SELECT ..., found `{}`", as_token.token),
                )
                .with_hint(format!(
                    "CREATE {} {name} AS SELECT ... FROM ...",
                    if kind == StreamKind::Table {
                        "TABLE"
                    } else {
                        "VIEW"
                    }
                )));
        }
        self.check_operator_count()?;
        let query = self.parser.parse_query().map_err(|e| self.sql_err(e))?;
        Ok(StreamStatement {
            kind,
            name,
            name_span,
            options,
            query,
            span,
        })
    }

    /// `WITH (key = value, ...)`, or nothing.
    fn options(&mut self) -> Result<Vec<OptionSpec>, SqlError> {
        let mut options = Vec::new();
        if !self.parser.parse_keyword(Keyword::WITH) {
            return Ok(options);
        }
        self.parser
            .expect_token(&Token::LParen)
            .map_err(|e| self.sql_err(e))?;
        loop {
            let key_tok = self.parser.next_token();
            let mut key = match &key_tok.token {
                Token::Word(w) => w.value.clone(),
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
                Token::RParen if options.is_empty() => break,
                other => {
                    return Err(self
                        .file
                        .error(
                            key_tok.span,
                            format!("expected an option name, found `{other}`"),
                        )
                        .with_hint("WITH (connector = 'generator', events = 1000)"))
                }
            };
            // Unquoted dotted keys: bootstrap.servers
            while self.parser.consume_token(&Token::Period) {
                let part = self.parser.next_token();
                match &part.token {
                    Token::Word(w) => {
                        key.push('.');
                        key.push_str(&w.value);
                    }
                    other => {
                        return Err(self.file.error(
                            part.span,
                            format!("expected the rest of option name `{key}.`, found `{other}`"),
                        ))
                    }
                }
            }
            let eq = self.parser.next_token();
            if eq.token != Token::Eq {
                return Err(self
                    .file
                    .error(
                        eq.span,
                        format!("expected `=` after option `{key}`, found `{}`", eq.token),
                    )
                    .with_hint(format!("{key} = 'value'")));
            }
            let value_tok = self.parser.next_token();
            let value = match &value_tok.token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
                Token::Number(n, _) => n.clone(),
                Token::Word(w) => w.value.clone(),
                Token::Minus => match self.parser.next_token().token {
                    Token::Number(n, _) => format!("-{n}"),
                    other => {
                        return Err(self.file.error(
                            value_tok.span,
                            format!("expected a number after `-`, found `{other}`"),
                        ))
                    }
                },
                other => {
                    return Err(self
                        .file
                        .error(
                            value_tok.span,
                            format!("expected a value for option `{key}`, found `{other}`"),
                        )
                        .with_hint("write the value as a string ('x') or a number"))
                }
            };
            options.push(OptionSpec {
                key: key.to_ascii_lowercase(),
                value,
                key_span: key_tok.span,
                value_span: value_tok.span,
            });
            if self.parser.consume_token(&Token::Comma) {
                continue;
            }
            let close = self.parser.next_token();
            if close.token == Token::RParen {
                break;
            }
            return Err(self
                .file
                .error(
                    close.span,
                    format!(
                        "expected `,` or `)` in WITH options, found `{}`",
                        close.token
                    ),
                )
                .with_hint("separate options with commas"));
        }
        Ok(options)
    }
}

/// The most binary operators one query may hold (see `check_operator_count`).
pub const MAX_OPERATORS: usize = 2000;

/// Identifiers are case-insensitive unless quoted, as in DataFusion.
fn normalize(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

/// `a.b` from an object name, normalising unquoted parts.
pub fn object_name_to_string(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(i) => normalize(&i.value, i.quote_style),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Extracts `(line, column)` from sqlparser's "... at Line: 3, Column: 7".
fn position_in_message(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(',')?;
    let col_text = &rest[rest.find("Column: ")? + 8..];
    let col: String = col_text
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Statement>, SqlError> {
        parse_file(&PipelineFile {
            path: "p.sql".into(),
            text: text.to_string(),
        })
    }

    #[test]
    fn parses_sources_tables_and_views() {
        let stmts = parse(
            "CREATE SOURCE tx (\n  id TEXT NOT NULL,\n  ts TIMESTAMP,\n  WATERMARK FOR ts AS ts - INTERVAL '10 minutes'\n) WITH (connector = 'files', 'bootstrap.servers' = 'x:1', max_files_per_trigger = 3);\n\
             CREATE TABLE bronze.tx WITH (partition_by = 'd') AS SELECT * FROM tx;\n\
             CREATE VIEW v AS SELECT id FROM tx",
        )
        .unwrap();
        assert_eq!(stmts.len(), 3);
        let Statement::Source(s) = &stmts[0] else {
            panic!()
        };
        assert_eq!(s.name, "tx");
        assert_eq!(s.columns.len(), 2);
        assert!(s.columns[0].not_null);
        assert_eq!(s.watermark.as_ref().unwrap().column, "ts");
        let keys: Vec<_> = s
            .options
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("connector", "files"),
                ("bootstrap.servers", "x:1"),
                ("max_files_per_trigger", "3")
            ]
        );
        let Statement::Stream(t) = &stmts[1] else {
            panic!()
        };
        assert_eq!((t.kind, t.name.as_str()), (StreamKind::Table, "bronze.tx"));
        let Statement::Stream(v) = &stmts[2] else {
            panic!()
        };
        assert_eq!(v.kind, StreamKind::View);
    }

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let e = parse("CREATE SOURCE s (a TEXT) WITH (connector 'x');").unwrap_err();
        assert_eq!((e.location.line, e.location.column), (1, 42), "{e}");
        assert!(e.to_string().contains("expected `=`"), "{e}");
        let e = parse("CREATE TABLE t AS\nSELEC 1;").unwrap_err();
        assert_eq!(e.location.line, 2, "{e}");
        let e = parse("CREATE INDEX i;").unwrap_err();
        assert!(e.hint.is_some());
    }
}
