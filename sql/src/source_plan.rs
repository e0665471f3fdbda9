//! One `CREATE SOURCE` into a planned source: its declared columns, watermark, the options
//! every source takes (idle timeout, event-time bounds, lenient JSON, late rows), and the
//! connector built through the source registry.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::options::Options;
use weir_engine::runtime::{register_stream, source_schema};
use weir_engine::source::{SourceArgs, SourceRegistry, COMMON_METADATA};
use weir_engine::types::SUPPORTED_TYPES;
use weir_engine::EngineError;

use crate::error::SqlError;
use crate::interval::expr_duration;
use crate::parser::{ColumnSpec, OptionSpec, PipelineFile, SourceStatement, WatermarkSpec};
use crate::planner::{dead_letter_stream_name, PlannedSource};

/// Turns an option error of the engine into a positioned SQL error with its hint.
pub(crate) fn option_error(
    file: &PipelineFile,
    options: &[OptionSpec],
    fallback: Span,
    err: EngineError,
) -> SqlError {
    match err {
        EngineError::Option {
            key,
            message,
            hint,
            unknown_key,
        } => {
            let opt = options.iter().find(|o| o.key == key);
            let span = opt
                .map(|o| {
                    if unknown_key {
                        o.key_span
                    } else {
                        o.value_span
                    }
                })
                .unwrap_or(fallback);
            let msg = if unknown_key {
                format!("`{key}` {message}")
            } else {
                format!("option `{key}`: {message}")
            };
            let e = file.error(span, msg);
            match hint {
                Some(h) => e.with_hint(h),
                None => e,
            }
        }
        other => file.error(fallback, other.to_string()),
    }
}

/// Arrow fields of declared `columns`; a repeated name or an unknown type is an error at the
/// column.
pub(crate) fn column_fields(
    file: &PipelineFile,
    columns: &[ColumnSpec],
) -> Result<Vec<Field>, SqlError> {
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    for c in columns {
        if !seen.insert(c.name.to_lowercase()) {
            return Err(file
                .error(c.span, format!("column `{}` is declared twice", c.name))
                .with_hint("column names are case-insensitive in SQL (as in Spark); rename one"));
        }
        let data_type = c.data_type.to_arrow().map_err(|type_name| {
            file.error(
                c.span,
                format!("type `{type_name}` of column `{}` is not supported", c.name),
            )
            .with_hint(format!("use one of {SUPPORTED_TYPES}"))
        })?;
        fields.push(Field::new(&c.name, data_type, !c.not_null));
    }
    Ok(fields)
}

/// The columns `s` declares, as an Arrow schema; a reserved name or no column at all is an
/// error at the column (see also [`column_fields`]).
fn declared_schema(file: &PipelineFile, s: &SourceStatement) -> Result<SchemaRef, SqlError> {
    let fields = column_fields(file, &s.columns)?;
    for c in &s.columns {
        if COMMON_METADATA
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&c.name))
        {
            return Err(file
                .error(
                    c.span,
                    format!("`{}` is a metadata column every source has", c.name),
                )
                .with_hint("rename the column"));
        }
    }
    if fields.is_empty() {
        return Err(file
            .error(
                s.name_span,
                format!("source `{}` declares no columns", s.name),
            )
            .with_hint("list the record's fields: CREATE SOURCE s (id TEXT, amount DOUBLE, ...)"));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The watermark column and delay of `WATERMARK FOR col AS col - INTERVAL '...'`.
fn watermark_of(
    file: &PipelineFile,
    w: &WatermarkSpec,
    declared: &SchemaRef,
) -> Result<(String, Duration), SqlError> {
    let field = declared
        .fields()
        .iter()
        .find(|f| f.name().eq_ignore_ascii_case(&w.column));
    let Some(field) = field else {
        return Err(file
            .error(
                w.span,
                format!("WATERMARK FOR `{}`: no such column", w.column),
            )
            .with_hint("name a TIMESTAMP column of this source"));
    };
    if !matches!(
        field.data_type(),
        arrow::datatypes::DataType::Timestamp(_, _)
    ) {
        return Err(file.error(
            w.span,
            format!(
                "WATERMARK FOR `{}`: the column is {}, not TIMESTAMP",
                w.column,
                field.data_type()
            ),
        ));
    }
    let delay = match &w.expr {
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&w.column) => Some(Duration::ZERO),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if matches!(&**left, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&w.column)) => {
            expr_duration(right)
        }
        _ => None,
    };
    let Some(delay) = delay else {
        return Err(file
            .error(w.span, "the watermark must be the column minus an interval")
            .with_hint(format!(
                "WATERMARK FOR {0} AS {0} - INTERVAL '10 minutes'",
                w.column
            )));
    };
    Ok((field.name().clone(), delay))
}

pub(crate) fn plan_source(
    ctx: &SessionContext,
    pipeline: &str,
    file: &PipelineFile,
    s: &SourceStatement,
    sources: &SourceRegistry,
) -> Result<PlannedSource, SqlError> {
    let declared = declared_schema(file, s)?;
    let watermark = match &s.watermark {
        None => None,
        Some(w) => Some(watermark_of(file, w, &declared)?),
    };
    let mut options = Options::new(s.options.iter().map(|o| (o.key.clone(), o.value.clone())));
    let Some(connector) = options.take_str("connector") else {
        return Err(file
            .error(s.name_span, format!("source `{}` has no connector", s.name))
            .with_hint(format!(
                "add WITH (connector = {}, ...)",
                sources
                    .names()
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )));
    };
    let connector = connector.to_ascii_lowercase();
    let common = common_options(file, s, &mut options)?;
    let args = SourceArgs {
        pipeline,
        source: &s.name,
    };
    let source = sources
        .build(args, &connector, options, &declared)
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?;
    let schema = source_schema(&declared, &source.metadata_fields());
    let table = register_stream(ctx, &s.name, schema)
        .map_err(|e| file.error(s.name_span, format!("cannot register source: {e}")))?;
    let dead_letter_stream = register_stream(
        ctx,
        &dead_letter_stream_name(&s.name),
        weir_engine::dead_letter::dead_letter_schema(&source.metadata_fields()),
    )
    .map_err(|e| {
        file.error(
            s.name_span,
            format!("cannot register its dead letters: {e}"),
        )
    })?;
    Ok(PlannedSource {
        name: s.name.clone(),
        connector,
        source,
        declared,
        table,
        dead_letter_stream,
        watermark,
        idle_timeout: common.idle_timeout,
        json_lenient: common.json_lenient,
        max_event_time_ahead: common.max_event_time_ahead,
        late_to_dead_letter: common.late_to_dead_letter,
        location: file.location(s.name_span),
    })
}

/// A source with no new data for this long stops holding the watermark back.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The options every source takes, whatever its connector.
struct CommonOptions {
    idle_timeout: Duration,
    max_event_time_ahead: Option<Duration>,
    json_lenient: bool,
    late_to_dead_letter: bool,
}

/// Takes the options of [`CommonOptions`] out of `options`, leaving the connector's.
fn common_options(
    file: &PipelineFile,
    s: &SourceStatement,
    options: &mut Options,
) -> Result<CommonOptions, SqlError> {
    // Taken here, not by the connector: it belongs to the watermark, for every connector.
    let idle_timeout = match options.take_str("idle_timeout") {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(text) => crate::interval::parse_duration(&text).ok_or_else(|| {
            option_error(
                file,
                &s.options,
                s.name_span,
                EngineError::option_hint(
                    "idle_timeout",
                    format!("'{text}' is not a duration"),
                    "write e.g. idle_timeout = '30 seconds'",
                ),
            )
        })?,
    };
    let max_event_time_ahead = match options.take_str("max_event_time_ahead") {
        None => Some(Duration::from_millis(
            weir_engine::event_time::DEFAULT_MAX_AHEAD_MS as u64,
        )),
        Some(text) if text.eq_ignore_ascii_case("none") => None,
        Some(text) => Some(crate::interval::parse_duration(&text).ok_or_else(|| {
            option_error(
                file,
                &s.options,
                s.name_span,
                EngineError::option_hint(
                    "max_event_time_ahead",
                    format!("'{text}' is not a duration"),
                    "write e.g. max_event_time_ahead = '1 day' (or 'none')",
                ),
            )
        })?),
    };
    let json_lenient = options
        .take_choice("json.lenient", &["true", "false"])
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?
        .is_some_and(|v| v == "true");
    // Planned as a table of its own (`dead_letter_topic.rs`), whatever the connector.
    options.take_str(crate::dead_letter_topic::DEAD_LETTER_TOPIC);
    let late_to_dead_letter = options
        .take_choice("late_data", &["drop", "dead_letter"])
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?
        .is_some_and(|v| v == "dead_letter");
    Ok(CommonOptions {
        idle_timeout,
        max_event_time_ahead,
        json_lenient,
        late_to_dead_letter,
    })
}
