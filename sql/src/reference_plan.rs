//! One `CREATE REFERENCE TABLE` into a planned reference: its connector opened through the
//! reference registry (so a missing file is an error at `weir validate`), and a table of its
//! columns registered for queries to join.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::prelude::SessionContext;
use weir_engine::options::Options;
use weir_engine::reference::{ReferenceArgs, ReferenceRegistry, ReferenceTable};
use weir_engine::runtime::epoch_table::EpochTable;
use weir_engine::runtime::register_stream;

use crate::error::{Location, SqlError};
use crate::parser::{PipelineFile, ReferenceStatement};
use crate::source_plan::{column_fields, option_error};

/// A planned reference table.
pub struct PlannedReference {
    /// Name from `CREATE REFERENCE TABLE`.
    pub name: String,
    /// The connector's table.
    pub table: Arc<dyn ReferenceTable>,
    /// The rows queries read, set to a version before each epoch.
    pub rows: Arc<EpochTable>,
    /// Where it is declared.
    pub location: Location,
}

/// Opens the reference `r` declares and registers its table in `ctx`.
pub(crate) async fn plan_reference(
    ctx: &SessionContext,
    file: &PipelineFile,
    r: &ReferenceStatement,
    registry: &ReferenceRegistry,
) -> Result<PlannedReference, SqlError> {
    let declared = match r.columns.is_empty() {
        true => None,
        false => Some(Arc::new(Schema::new(column_fields(file, &r.columns)?))),
    };
    let mut options = Options::new(r.options.iter().map(|o| (o.key.clone(), o.value.clone())));
    let Some(connector) = options.take_str("connector") else {
        return Err(file
            .error(
                r.name_span,
                format!("reference table `{}` has no connector", r.name),
            )
            .with_hint(format!(
                "add WITH (connector = {}, path = '...')",
                registry
                    .names()
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )));
    };
    let args = ReferenceArgs {
        table: &r.name,
        declared,
        base_dir: file.path.parent(),
    };
    let table = registry
        .open(&connector.to_ascii_lowercase(), args, options)
        .await
        .map_err(|e| option_error(file, &r.options, r.name_span, e))?;
    let rows = register_stream(ctx, &r.name, table.schema())
        .map_err(|e| file.error(r.name_span, format!("cannot register `{}`: {e}", r.name)))?;
    Ok(PlannedReference {
        name: r.name.clone(),
        table,
        rows,
        location: file.location(r.name_span),
    })
}
