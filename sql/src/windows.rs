//! Window table functions in FROM, as in Flink and RisingWave:
//! `TUMBLE(input, time_col, size)` and `HOP(input, time_col, slide, size)` add the columns
//! `window_start` and `window_end` to every row of `input` (HOP repeats a row once per window
//! that contains it). `SESSION(input, time_col, gap)` (Flink's session window) gives each row
//! the session `[time, time + gap)`; the engine merges overlapping sessions of the same group
//! keys, so a session ends `gap` after its last event. They are rewritten into plain SQL over
//! `date_bin` before DataFusion plans the query; the streaming part (state, watermark, emission,
//! session merging) is the engine's window operator.

use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, Ident, Query, Spanned, TableAlias,
    TableFactor, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::interval::expr_duration;
use crate::parser::object_name_to_string;

/// The column that closes a window; the engine emits a window when the watermark passes it.
pub const WINDOW_END: &str = "window_end";

/// A window function found in a query, for the planner and `weir explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// `tumble`, `hop` or `session`.
    pub kind: String,
    /// The event-time column.
    pub time_column: String,
    /// Window length.
    pub size: Duration,
    /// Distance between window starts (= size for TUMBLE; for SESSION, the gap).
    pub slide: Duration,
    /// How far window starts are shifted from multiples of the slide since 1970-01-01 UTC
    /// (Spark's `startTime`): hourly windows at :15 past, days at a time zone's midnight.
    pub offset: Duration,
}

impl WindowSpec {
    /// Whether windows are sessions, merged when they overlap.
    pub fn is_session(&self) -> bool {
        self.kind == "session"
    }

    /// The window as a person reads it (`TUMBLE on ts: size 1min, offset 8h`), for
    /// `weir explain` and for checkpoints, which refuse state built for another window.
    pub fn describe(&self) -> String {
        let d = |d: Duration| format_duration(d);
        let mut text = match self.kind.as_str() {
            "session" => format!("SESSION on {}: gap {}", self.time_column, d(self.size)),
            "tumble" => format!("TUMBLE on {}: size {}", self.time_column, d(self.size)),
            _ => format!(
                "HOP on {}: size {}, slide {}",
                self.time_column,
                d(self.size),
                d(self.slide)
            ),
        };
        if !self.offset.is_zero() {
            text.push_str(&format!(", offset {}", d(self.offset)));
        }
        text
    }
}

/// The most windows a HOP may put one row in (size / slide): each is a copy of the row.
pub const MAX_WINDOWS_PER_ROW: u128 = 1000;

/// A duration in the largest unit that divides it: `90s`, `15min`, `8h`, `1d`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ] {
        if ms > 0 && ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

/// A mistake in a window function call, with where it is.
#[derive(Debug, Clone)]
pub struct WindowError {
    /// Position of the call.
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

/// Replaces TUMBLE / HOP calls in `query`; returns the windows found.
pub fn rewrite_window_functions(query: &mut Query) -> Result<Vec<WindowSpec>, WindowError> {
    let mut v = Rewriter {
        found: Vec::new(),
        error: None,
    };
    let _ = query.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.found),
    }
}

struct Rewriter {
    found: Vec<WindowSpec>,
    error: Option<WindowError>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let kind = object_name_to_string(name);
        if !is_window_function(&kind) {
            return ControlFlow::Continue(());
        }
        let span = name
            .0
            .first()
            .and_then(|p| p.as_ident())
            .map(|i| i.span)
            .unwrap_or(Span::empty());
        match window_subquery(&kind, &args.args) {
            Ok((spec, input, subquery)) => {
                let alias = alias.clone().unwrap_or(TableAlias {
                    explicit: true,
                    at: None,
                    name: Ident::new(input.rsplit('.').next().unwrap_or(&input)),
                    columns: Vec::new(),
                });
                let subquery = match marked(subquery, self.found.len()) {
                    Ok(mut q) => {
                        // The query was parsed from generated text: point its names at the
                        // window's time column as written, so an unknown column is reported
                        // there.
                        respan(&mut q, time_column_span(&args.args).unwrap_or(span));
                        q
                    }
                    Err(message) => {
                        self.error = Some(WindowError {
                            span,
                            message,
                            hint: String::new(),
                        });
                        return ControlFlow::Break(());
                    }
                };
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery,
                    alias: Some(alias),
                    sample: None,
                };
                self.found.push(spec);
                ControlFlow::Continue(())
            }
            Err((message, hint)) => {
                self.error = Some(WindowError {
                    span,
                    message,
                    hint,
                });
                ControlFlow::Break(())
            }
        }
    }
}

/// Where the time column argument (the second) of a window function call is written.
fn time_column_span(args: &[FunctionArg]) -> Option<Span> {
    match args.get(1)? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.span()),
        _ => None,
    }
}

/// Gives every identifier of `query` the position `span`.
fn respan(query: &mut Query, span: Span) {
    let _ = visit_expressions_mut(query, |e| {
        match e {
            Expr::Identifier(ident) => ident.span = span,
            Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(|p| p.span = span),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The alias that marks the rows of the query's `n`th window function (in the order
/// [`rewrite_window_functions`] returns them), so the planner finds the aggregate over them.
pub fn window_marker(n: usize) -> String {
    format!("{WINDOW_MARKER_PREFIX}{n}")
}

/// The prefix of [`window_marker`] aliases.
pub const WINDOW_MARKER_PREFIX: &str = "__weir_window_";

/// `subquery` inside `SELECT * FROM (subquery) AS <marker n>`.
fn marked(subquery: Box<Query>, n: usize) -> Result<Box<Query>, String> {
    let sql = format!("SELECT * FROM ({subquery}) AS {}", window_marker(n));
    Parser::new(&GenericDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| format!("cannot build the window query: {e}"))
}

/// Whether a relation name is a window table function.
pub fn is_window_function(name: &str) -> bool {
    name == "tumble" || name == "hop" || name == "session"
}

/// The inputs of the window functions in `query` (their first argument), with positions.
pub fn window_inputs(query: &Query) -> Vec<(String, Span)> {
    struct Inputs(Vec<(String, Span)>);
    impl Visitor for Inputs {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
            {
                if is_window_function(&object_name_to_string(name)) {
                    if let Some(first) = args.args.first().and_then(arg_expr) {
                        let span = match first {
                            Expr::Identifier(i) => i.span,
                            Expr::CompoundIdentifier(p) => {
                                p.first().map(|i| i.span).unwrap_or(Span::empty())
                            }
                            _ => Span::empty(),
                        };
                        if let Some(name) = identifier(first) {
                            self.0.push((name, span));
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Inputs(Vec::new());
    let _ = query.visit(&mut v);
    v.0
}

fn arg_expr(arg: &FunctionArg) -> Option<&Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        _ => None,
    }
}

fn identifier(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) if i.quote_style.is_some() => Some(i.value.clone()),
        Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(parts) => Some(
            parts
                .iter()
                .map(|p| p.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join("."),
        ),
        _ => None,
    }
}

type Rewritten = (WindowSpec, String, Box<Query>);

/// A window function call, checked: the window, its input and the time column as written.
struct WindowCall {
    spec: WindowSpec,
    input: String,
    time_sql: String,
    usage: &'static str,
}

/// The window function `kind(args)` as a derived table: the input's rows with `window_start`
/// and `window_end` (one copy per window for HOP).
fn window_subquery(kind: &str, args: &[FunctionArg]) -> Result<Rewritten, (String, String)> {
    let call = window_call(kind, args)?;
    let sql = window_rows_sql(&call);
    let query = Parser::new(&GenericDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| {
            (
                format!("cannot build the window query: {e}"),
                call.usage.to_string(),
            )
        })?;
    Ok((call.spec, call.input, query))
}

/// Checks the arguments of `kind(args)`: input, time column, sizes, offset.
fn window_call(kind: &str, args: &[FunctionArg]) -> Result<WindowCall, (String, String)> {
    let usage = match kind {
        "tumble" => "TUMBLE(input, time_column, INTERVAL '1 minute' [, INTERVAL '0 seconds' /* offset */])",
        "session" => "SESSION(input, time_column, INTERVAL '30 minutes' /* gap */)",
        _ => "HOP(input, time_column, INTERVAL '5 minutes' /* slide */, INTERVAL '15 minutes' /* size */ [, INTERVAL '0 seconds' /* offset */])",
    };
    // The size arguments, and one more for an offset (not for sessions).
    let sizes = if kind == "hop" { 2 } else { 1 };
    let allowed = if kind == "session" {
        vec![2 + sizes]
    } else {
        vec![2 + sizes, 3 + sizes]
    };
    let exprs: Vec<&Expr> = args.iter().filter_map(arg_expr).collect();
    if !allowed.contains(&exprs.len()) || args.len() != exprs.len() {
        let counts = allowed
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        return Err((
            format!(
                "{} takes {counts} arguments, got {}",
                kind.to_uppercase(),
                args.len()
            ),
            usage.to_string(),
        ));
    }
    let input = identifier(exprs[0]).ok_or_else(|| {
        (
            "the first argument must name a source, table or view".to_string(),
            usage.to_string(),
        )
    })?;
    let time = identifier(exprs[1]).ok_or_else(|| {
        (
            "the second argument must name the event-time column".to_string(),
            usage.to_string(),
        )
    })?;
    let offset = match exprs.get(2 + sizes) {
        None => Duration::ZERO,
        Some(e) => expr_duration(e).ok_or_else(|| {
            (
                "the window offset must be an interval of zero or more, e.g. INTERVAL '15 minutes'"
                    .to_string(),
                "for days that start at midnight UTC+8 (16:00 UTC) use an offset of '16 hours'; \
                 a negative offset -x is the same as slide - x"
                    .to_string(),
            )
        })?,
    };
    let durations: Vec<Duration> = exprs[2..2 + sizes]
        .iter()
        .map(|e| expr_duration(e).filter(|d| !d.is_zero()))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            (
                "window sizes must be positive intervals".to_string(),
                usage.to_string(),
            )
        })?;
    let (slide, size) = if kind != "hop" {
        (durations[0], durations[0])
    } else {
        (durations[0], durations[1])
    };
    check_window_sizes(size, slide, offset, usage)?;
    // The column as written (quoted where its spelling matters), for the generated SQL.
    let time_sql = exprs[1].to_string();
    Ok(WindowCall {
        spec: WindowSpec {
            kind: kind.to_string(),
            time_column: time,
            size,
            slide,
            offset,
        },
        input,
        time_sql,
        usage,
    })
}

/// Refuses a slide longer than the window, an offset not shorter than the slide, and more
/// than [`MAX_WINDOWS_PER_ROW`] windows per row.
fn check_window_sizes(
    size: Duration,
    slide: Duration,
    offset: Duration,
    usage: &str,
) -> Result<(), (String, String)> {
    if slide > size {
        return Err((
            "the slide is longer than the window, so some rows would be in no window".to_string(),
            usage.to_string(),
        ));
    }
    if offset >= slide {
        return Err((
            format!(
                "the window offset {} is not shorter than the slide {}",
                format_duration(offset),
                format_duration(slide)
            ),
            "an offset shifts windows within one slide; take it modulo the slide".to_string(),
        ));
    }
    let (slide_ms, size_ms) = (slide.as_millis(), size.as_millis());
    let per_row = size_ms.div_ceil(slide_ms);
    if per_row > MAX_WINDOWS_PER_ROW {
        return Err((
            format!(
                "each row would be in {per_row} windows (size {} / slide {}); at most \
                 {MAX_WINDOWS_PER_ROW} are allowed",
                format_duration(size),
                format_duration(slide)
            ),
            "use a longer slide, or TUMBLE over the slide and aggregate those windows in a \
             downstream table"
                .to_string(),
        ));
    }
    Ok(())
}

/// The SQL of a window's rows: the input with `window_start` and `window_end` columns.
fn window_rows_sql(call: &WindowCall) -> String {
    let WindowCall {
        spec,
        input,
        time_sql,
        ..
    } = call;
    let (slide, size, offset) = (spec.slide, spec.size, spec.offset);
    let (slide_ms, size_ms) = (slide.as_millis(), size.as_millis());
    let interval = |ms: u128| format!("INTERVAL '{ms} milliseconds'");
    // Shifts are written as durations, not intervals: adding an interval to a timestamp with a
    // zone converts every row to local time and back (it could hold months or days), while a
    // duration is plain arithmetic on the epoch value, and the same for a fixed length.
    let duration = |ms: u128| format!("arrow_cast({ms}, 'Duration(Millisecond)')");
    let bin = match offset.as_millis() {
        0 => format!("date_bin({}, {time_sql})", interval(slide_ms)),
        ms => format!(
            "(date_bin({}, {time_sql} - {d}) + {d})",
            interval(slide_ms),
            d = duration(ms)
        ),
    };
    if spec.kind == "session" {
        // Each row starts as its own session; the engine merges overlapping ones per key.
        format!(
            "SELECT *, {time_sql} AS window_start, {time_sql} + {} AS window_end FROM {input}",
            duration(size_ms)
        )
    } else if spec.kind == "tumble" {
        format!(
            "SELECT *, {bin} AS window_start, {bin} + {} AS window_end FROM {input}",
            duration(size_ms)
        )
    } else {
        let n = size_ms.div_ceil(slide_ms);
        let starts: Vec<String> = (0..n)
            .map(|k| match k {
                0 => bin.clone(),
                _ => format!("{bin} - {}", duration(k * slide_ms)),
            })
            .collect();
        format!(
            "SELECT *, window_start + {size} AS window_end FROM \
             (SELECT *, unnest(make_array({})) AS window_start FROM {input}) AS hop_rows \
             WHERE {time_sql} < window_start + {size}",
            starts.join(", "),
            size = duration(size_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> Result<(String, Vec<WindowSpec>), WindowError> {
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_query()
            .unwrap();
        let found = rewrite_window_functions(&mut q)?;
        Ok((q.to_string(), found))
    }

    #[test]
    fn tumble_becomes_date_bin_columns() {
        let (sql, found) = rewrite(
            "SELECT window_start, count(*) FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY 1",
        )
        .unwrap();
        assert!(
            sql.contains("date_bin(INTERVAL '60000 milliseconds', ts) AS window_start"),
            "{sql}"
        );
        assert!(sql.contains("AS ev GROUP BY"), "{sql}");
        assert_eq!(found[0].size, Duration::from_secs(60));
    }

    #[test]
    fn hop_lists_every_window_of_a_row() {
        let (sql, found) =
            rewrite("SELECT * FROM HOP(ev, ts, INTERVAL '5 minutes', INTERVAL '15 minutes') AS h")
                .unwrap();
        assert_eq!(sql.matches("date_bin(").count(), 3, "{sql}");
        assert!(sql.ends_with("AS h"), "{sql}");
        assert_eq!(found[0].slide, Duration::from_secs(300));
    }

    #[test]
    fn bad_calls_say_how_to_write_them() {
        let e = rewrite("SELECT * FROM TUMBLE(ev, ts)").unwrap_err();
        assert!(e.message.contains("3 or 4 arguments"), "{}", e.message);
        assert!(e.hint.contains("TUMBLE(input"));
        let e = rewrite("SELECT * FROM HOP(ev, ts, INTERVAL '10 minutes', INTERVAL '5 minutes')")
            .unwrap_err();
        assert!(e.message.contains("slide"), "{}", e.message);
        let e = rewrite("SELECT * FROM TUMBLE(ev, ts, INTERVAL '1 hour', INTERVAL '1 hour')")
            .unwrap_err();
        assert!(
            e.message.contains("offset 1h is not shorter"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_offset_shifts_window_starts() {
        let (sql, found) =
            rewrite("SELECT * FROM TUMBLE(ev, ts, INTERVAL '1 day', INTERVAL '16 hours') AS d")
                .unwrap();
        assert!(
            sql.contains("date_bin(INTERVAL '86400000 milliseconds', ts - arrow_cast(57600000"),
            "{sql}"
        );
        assert_eq!(found[0].describe(), "TUMBLE on ts: size 1d, offset 16h");
    }
}
