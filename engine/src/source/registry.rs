//! The source connectors, by name: `CREATE SOURCE ... WITH (connector = 'files', ...)` is built
//! here and nowhere else. Adding a connector is a new file in `source/` and one line in
//! [`SourceRegistry::builtin`].

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;

use super::{FilesSource, GeneratorSource, KafkaSource, Source};
use crate::error::{EngineError, Result};
use crate::options::Options;

/// Who a source is built for.
#[derive(Debug, Clone, Copy)]
pub struct SourceArgs<'a> {
    /// The pipeline (Kafka names its consumer group after it).
    pub pipeline: &'a str,
    /// The source, as named in `CREATE SOURCE`.
    pub source: &'a str,
}

/// Builds a connector's source from its WITH options, taking the ones it knows.
pub type SourceFactory = fn(SourceArgs<'_>, &mut Options) -> Result<Box<dyn Source>>;

/// Source connectors by name.
#[derive(Debug, Clone)]
pub struct SourceRegistry {
    factories: BTreeMap<&'static str, SourceFactory>,
}

impl SourceRegistry {
    /// The connectors Weir ships: `files`, `generator`, `kafka`.
    pub fn builtin() -> Self {
        let mut registry = SourceRegistry {
            factories: BTreeMap::new(),
        };
        registry.register("files", |args, options| {
            Ok(Box::new(FilesSource::from_options(args.source, options)?))
        });
        registry.register("generator", |args, options| {
            Ok(Box::new(GeneratorSource::from_options(
                args.source,
                options,
            )?))
        });
        registry.register("kafka", |args, options| {
            Ok(Box::new(KafkaSource::from_options(
                args.pipeline,
                args.source,
                options,
            )?))
        });
        registry
    }

    /// Adds (or replaces) connector `name`.
    pub fn register(&mut self, name: &'static str, factory: SourceFactory) {
        self.factories.insert(name, factory);
    }

    /// The connectors' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Builds a source for `connector` from its WITH options (after `connector` itself was
    /// taken). Unknown connectors and options are errors naming the option and the accepted
    /// values; a declared column may not clash with a metadata column of the connector.
    pub fn build(
        &self,
        args: SourceArgs<'_>,
        connector: &str,
        mut options: Options,
        schema: &SchemaRef,
    ) -> Result<Box<dyn Source>> {
        let Some(factory) = self.factories.get(connector) else {
            return Err(EngineError::option_hint(
                "connector",
                format!("unknown connector '{connector}'"),
                format!("use one of: {}", self.names().join(", ")),
            ));
        };
        let source = factory(args, &mut options)?;
        options.finish(&format!("connector '{connector}'"))?;
        for f in source.metadata_fields() {
            if schema.field_with_name(f.name()).is_ok() {
                return Err(EngineError::option_hint(
                    "connector",
                    format!(
                        "column `{}` clashes with a metadata column of connector '{connector}'",
                        f.name()
                    ),
                    "rename it",
                ));
            }
        }
        Ok(source)
    }
}
