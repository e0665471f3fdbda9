//! Column lists (of `CREATE SOURCE` and `CREATE REFERENCE TABLE`) and reference-table
//! statements.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Span, Token};

use super::{ColumnSpec, ReferenceStatement, StatementParser, WatermarkSpec};
use crate::error::SqlError;

impl StatementParser<'_> {
    /// `CREATE REFERENCE TABLE name [(columns)] WITH (...)`, after `REFERENCE TABLE`.
    pub(super) fn reference(&mut self, span: Span) -> Result<ReferenceStatement, SqlError> {
        let (name, name_span) = self.name()?;
        let mut columns = Vec::new();
        if self.parser.consume_token(&Token::LParen) {
            let (declared, watermark) = self.column_list()?;
            if let Some(w) = watermark {
                return Err(self
                    .file
                    .error(w.span, "a reference table has no watermark")
                    .with_hint("declare the watermark on the stream it is joined with"));
            }
            columns = declared;
        }
        let options = self.options()?;
        Ok(ReferenceStatement {
            name,
            name_span,
            columns,
            options,
            span,
        })
    }

    /// The columns (and watermark) of a column list, after its `(`, through its `)`.
    pub(super) fn column_list(
        &mut self,
    ) -> Result<(Vec<ColumnSpec>, Option<WatermarkSpec>), SqlError> {
        let mut columns = Vec::new();
        let mut watermark = None;
        loop {
            let next = self.parser.peek_token();
            let is_watermark =
                matches!(&next.token, Token::Word(w) if w.value.eq_ignore_ascii_case("WATERMARK"));
            if is_watermark {
                self.parser.next_token();
                self.parser
                    .expect_keyword_is(Keyword::FOR)
                    .map_err(|e| self.sql_err(e))?;
                let column = self
                    .parser
                    .parse_identifier()
                    .map_err(|e| self.sql_err(e))?;
                self.parser
                    .expect_keyword_is(Keyword::AS)
                    .map_err(|e| self.sql_err(e))?;
                let expr = self.parser.parse_expr().map_err(|e| self.sql_err(e))?;
                watermark = Some(WatermarkSpec {
                    // Column names keep their spelling (JSON keys are case-sensitive); SQL
                    // references find them case-insensitively (see `identifiers`).
                    column: column.value.clone(),
                    expr,
                    span: next.span,
                });
            } else {
                let col_span = next.span;
                let name = self
                    .parser
                    .parse_identifier()
                    .map_err(|e| self.sql_err(e))?;
                let data_type = self.parse_column_type()?;
                let not_null = self.parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                if !not_null {
                    let _ = self.parser.parse_keyword(Keyword::NULL);
                }
                columns.push(ColumnSpec {
                    name: name.value,
                    data_type,
                    not_null,
                    span: col_span,
                });
            }
            if self.parser.consume_token(&Token::Comma) {
                continue;
            }
            let close = self.parser.peek_token();
            if self.parser.consume_token(&Token::RParen) {
                break;
            }
            return Err(self
                .file
                .error(
                    close.span,
                    format!(
                        "expected `,` or `)` in the column list, found `{}`",
                        close.token
                    ),
                )
                .with_hint("separate columns with commas and close the list with `)`"));
        }
        Ok((columns, watermark))
    }
}
