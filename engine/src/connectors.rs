//! Every connector a pipeline can use, by name: source connectors (`CREATE SOURCE ... WITH
//! (connector = ...)`) and sink connectors (`CREATE TABLE ... WITH (connector = ...)`). The
//! planner checks options through them and the runtime opens through them; the full set
//! (with Delta, from `weir-lakehouse`) is assembled by `weir_cli::connectors`.

use crate::reference::ReferenceRegistry;
use crate::sink::SinkRegistry;
use crate::source::SourceRegistry;

/// The source and sink connectors of a build.
#[derive(Debug, Clone)]
pub struct Connectors {
    /// Source connectors.
    pub sources: SourceRegistry,
    /// Sink connectors, with the default for tables that name none.
    pub sinks: SinkRegistry,
    /// Reference-table connectors (`CREATE REFERENCE TABLE`).
    pub references: ReferenceRegistry,
}
