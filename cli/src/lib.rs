//! The wiring behind `weir run`, shared with the end-to-end tests: turns a planned pipeline into
//! a runnable one by attaching a Delta sink to every table and a dead-letter table to every
//! source.

pub mod example_events;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;

use weir_engine::connectors::Connectors;
use weir_engine::format::json::decode::JsonDecoder;
use weir_engine::operators::row_errors::{splittable, RowInput};
use weir_engine::operators::{stateful_steps, TableContext};
use weir_engine::reference::ReferenceRegistry;
use weir_engine::runtime::checkpoint::Checkpoint;
use weir_engine::runtime::epoch_table::EpochTable;
use weir_engine::runtime::{EventTime, Pipeline, QueryNode, ReferenceNode, SourceNode};
use weir_engine::sink::kafka::KafkaSinkConnector;
use weir_engine::sink::{Sink, SinkPlace, SinkRegistry};
use weir_engine::source::SourceRegistry;
use weir_lakehouse::{
    open_dead_letter_table, DeltaConnector, DeltaReferenceConnector, LakehouseError,
};

pub use weir_lakehouse::table_location;
use weir_sql::{PlannedNode, PlannedPipeline, PlannedSource};

/// The pipeline name for a path: the folder name, or the file name without `.sql`.
/// `.`, `..` or `dir/` name the folder they resolve to.
pub fn pipeline_name(path: &Path) -> String {
    let resolved = match path.file_name() {
        Some(_) => path.to_path_buf(),
        None => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
    };
    let stem = if resolved.is_dir() {
        resolved.file_name()
    } else {
        resolved.file_stem()
    };
    stem.map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "pipeline".to_string())
}

/// Every connector this build has: the engine's sources and file references, the Delta (the
/// default) and Kafka sinks, and Delta references. Adding a sink or reference connector from
/// outside the engine is one `register` line here.
pub fn connectors() -> Connectors {
    let mut sinks = SinkRegistry::new("delta");
    sinks.register("delta", Arc::new(DeltaConnector));
    sinks.register("kafka", Arc::new(KafkaSinkConnector));
    sinks.register("postgres", Arc::new(weir_postgres::PostgresSinkConnector));
    let mut references = ReferenceRegistry::builtin();
    references.register("delta", Arc::new(DeltaReferenceConnector));
    references.register(
        "postgres",
        Arc::new(weir_postgres::PostgresReferenceConnector),
    );
    Connectors {
        sources: SourceRegistry::builtin(),
        sinks,
        references,
    }
}

/// Where a source's dead letters go: `<lake>/_dead_letter/<source>`.
pub fn dead_letter_location(lake: &Path, source: &str) -> PathBuf {
    lake.join("_dead_letter").join(source)
}

/// Attaches sinks to `planned` and returns the pipeline ready to run against `checkpoint`.
/// Each Delta table's transaction app id is `weir:<pipeline>:<table>`.
pub async fn assemble(
    planned: PlannedPipeline,
    lake: &Path,
    checkpoint: Checkpoint,
) -> Result<Pipeline, LakehouseError> {
    let name = planned.name.clone();
    let graph = Graph::of(&planned);
    let sources = assemble_sources(planned.sources, lake, &name).await?;
    let mut nodes = Vec::new();
    let mut streams = graph.source_streams.clone();
    for n in planned.nodes {
        let sink = open_sink(&n, lake, &name).await?;
        let update_mode = n.sink.as_ref().is_some_and(|s| s.update_keys.is_some());
        let row_input = graph.row_input(&n, &streams);
        streams.insert(n.name.clone(), n.table.clone());
        let late_rows_to = graph.late_rows_to(&n);
        // The node's stateful step, if any, runs through its operator.
        let table = TableContext {
            update_mode,
            late_rows_to,
        };
        let operator = stateful_steps(&n.plan)
            .first()
            .map(|step| step.node().operator(&table));
        nodes.push(QueryNode {
            inputs: n.inputs.clone(),
            row_input,
            name: n.name,
            plan: n.plan,
            table: n.table,
            sink,
            operator,
        });
    }
    let references = planned
        .references
        .into_iter()
        .map(|r| ReferenceNode {
            name: r.name,
            table: r.table,
            rows: r.rows,
        })
        .collect();
    Ok(Pipeline::new(&name, planned.ctx, sources, nodes, checkpoint).with_references(references))
}

/// Each planned source with its decoder, watermark and dead-letter table.
async fn assemble_sources(
    planned: Vec<PlannedSource>,
    lake: &Path,
    pipeline: &str,
) -> Result<Vec<SourceNode>, LakehouseError> {
    let mut sources = Vec::new();
    for s in planned {
        let dead_letter = open_dead_letter_table(
            &dead_letter_location(lake, &s.name),
            pipeline,
            &s.name,
            &s.dead_letter_stream.schema(),
        )
        .await?;
        sources.push(SourceNode {
            name: s.name,
            source: s.source,
            decoder: JsonDecoder::new(s.declared).lenient(s.json_lenient),
            table: s.table,
            dead_letter,
            dead_letter_stream: s.dead_letter_stream,
            event_time: s.watermark.map(|(column, delay)| EventTime {
                column,
                delay_ms: delay.as_millis() as i64,
                idle_timeout: s.idle_timeout,
                max_ahead: s.max_event_time_ahead,
            }),
        });
    }
    Ok(sources)
}

/// Opens a table's sink through its connector (`None` for a view).
async fn open_sink(
    n: &PlannedNode,
    lake: &Path,
    pipeline: &str,
) -> Result<Option<Box<dyn Sink>>, LakehouseError> {
    let Some(table_sink) = &n.sink else {
        return Ok(None);
    };
    let place = SinkPlace {
        lake,
        pipeline,
        table: &n.name,
        schema: &n.table.schema_ref(),
    };
    let opened = table_sink
        .planned
        .open(place)
        .await
        .map_err(|e| LakehouseError::SinkSetup {
            table: n.name.clone(),
            message: e.to_string(),
        })?;
    Ok(Some(opened))
}

/// Who reads whom in a planned pipeline.
struct Graph {
    /// Each node's inputs.
    inputs: HashMap<String, Vec<String>>,
    /// The sources.
    source_names: Vec<String>,
    /// Sources whose late rows are dead-lettered (`late_data = 'dead_letter'`).
    dead_letter_sources: Vec<String>,
    /// The sources' streams, by name.
    source_streams: HashMap<String, Arc<EpochTable>>,
}

impl Graph {
    fn of(planned: &PlannedPipeline) -> Self {
        Graph {
            inputs: planned
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.inputs.clone()))
                .collect(),
            source_names: planned.sources.iter().map(|s| s.name.clone()).collect(),
            dead_letter_sources: planned
                .sources
                .iter()
                .filter(|s| s.late_to_dead_letter)
                .map(|s| s.name.clone())
                .collect(),
            source_streams: planned
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.table.clone()))
                .collect(),
        }
    }

    /// A windowed node dead-letters late rows into the first upstream source that asks.
    fn late_rows_to(&self, n: &PlannedNode) -> Option<String> {
        if stateful_steps(&n.plan).is_empty() {
            return None;
        }
        upstream(&n.name, &self.inputs)
            .into_iter()
            .find(|s| self.dead_letter_sources.contains(s))
    }

    /// A node without a window that reads one stream and joins nothing can dead-letter the
    /// rows its query fails on, into its upstream source's dead letters.
    fn row_input(
        &self,
        n: &PlannedNode,
        streams: &HashMap<String, Arc<EpochTable>>,
    ) -> Option<RowInput> {
        let [input] = n.inputs.as_slice() else {
            return None;
        };
        if !stateful_steps(&n.plan).is_empty() {
            return None;
        }
        if !splittable(&n.plan) {
            return None;
        }
        let source = upstream(&n.name, &self.inputs)
            .into_iter()
            .chain(std::iter::once(input.clone()))
            .find(|s| self.source_names.contains(s))?;
        Some(RowInput {
            table: streams.get(input)?.clone(),
            name: input.clone(),
            source,
        })
    }
}

/// Every stream `node` reads, directly or through other nodes, sorted.
fn upstream(node: &str, inputs: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![node.to_string()];
    while let Some(n) = todo.pop() {
        for input in inputs.get(&n).into_iter().flatten() {
            if seen.insert(input.clone()) {
                todo.push(input.clone());
            }
        }
    }
    seen.into_iter().collect()
}
