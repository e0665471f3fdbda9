//! The statements of a pipeline file as the parser returns them: sources with their columns,
//! watermark and options; tables and views with their query. Every part keeps its position.

use datafusion::sql::sqlparser::ast::{Expr, Query};
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::types::SqlType;

/// A value written in a WITH clause, with where it was written.
#[derive(Debug, Clone)]
pub struct OptionSpec {
    /// Lower-cased key (`'bootstrap.servers'` and `bootstrap.servers` are the same).
    pub key: String,
    /// The value as text (strings unquoted, numbers as written).
    pub value: String,
    /// Position of the key.
    pub key_span: Span,
    /// Position of the value.
    pub value_span: Span,
}

/// A declared column of a source.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// The SQL type as written.
    pub data_type: SqlType,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// Position of the column name.
    pub span: Span,
}

/// `WATERMARK FOR col AS <expr>`.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    /// The event-time column.
    pub column: String,
    /// The watermark expression (`col - INTERVAL '10 minutes'`).
    pub expr: Expr,
    /// Position of the WATERMARK keyword.
    pub span: Span,
}

/// `CREATE SOURCE name (...) WITH (...)`.
#[derive(Debug, Clone)]
pub struct SourceStatement {
    /// Source name (lower-cased unless quoted).
    pub name: String,
    /// Position of the name.
    pub name_span: Span,
    /// Declared columns in order.
    pub columns: Vec<ColumnSpec>,
    /// The watermark declaration, if any.
    pub watermark: Option<WatermarkSpec>,
    /// WITH options.
    pub options: Vec<OptionSpec>,
    /// Position of CREATE.
    pub span: Span,
}

/// `CREATE REFERENCE TABLE name [(columns)] WITH (connector = ..., ...)`: a table the
/// pipeline reads but does not produce (users, products), joined with streams.
#[derive(Debug, Clone)]
pub struct ReferenceStatement {
    /// Table name.
    pub name: String,
    /// Position of the name.
    pub name_span: Span,
    /// Declared columns (the data's own when empty).
    pub columns: Vec<ColumnSpec>,
    /// WITH options.
    pub options: Vec<OptionSpec>,
    /// Position of CREATE.
    pub span: Span,
}

/// Whether a stream statement writes a table or only names a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `CREATE TABLE`: written every epoch.
    Table,
    /// `CREATE VIEW` / `CREATE STREAM`: intermediate, not stored.
    View,
}

/// `CREATE TABLE|VIEW name [WITH (...)] AS <query>`.
#[derive(Debug, Clone)]
pub struct StreamStatement {
    /// Table or view.
    pub kind: StreamKind,
    /// Name, possibly dotted (`bronze.events`).
    pub name: String,
    /// Position of the name.
    pub name_span: Span,
    /// WITH options.
    pub options: Vec<OptionSpec>,
    /// The query.
    pub query: Box<Query>,
    /// Position of CREATE.
    pub span: Span,
}

/// One statement of a pipeline file.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A source.
    Source(Box<SourceStatement>),
    /// A table or view.
    Stream(StreamStatement),
    /// A reference table.
    Reference(Box<ReferenceStatement>),
}
