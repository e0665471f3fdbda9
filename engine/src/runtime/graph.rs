//! The pipeline as a graph of sources, tables and views with their stateful operators, for
//! the page of `weir serve` (its DAG) and anything else that draws or checks the shape.

use serde::Serialize;

use super::pipeline::Pipeline;

/// What a node of the graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A `CREATE SOURCE`.
    Source,
    /// A `CREATE TABLE`: written to a sink.
    Table,
    /// A `CREATE VIEW`: read by other nodes only.
    View,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphNode {
    /// Its name in the SQL (hidden tables the planner adds start with `_`).
    pub name: String,
    /// Source, table or view.
    pub kind: NodeKind,
    /// Its stateful step as `weir explain` describes it (a window, dedupe or join), if any.
    pub operator: Option<String>,
    /// The streams it reads: sources, other nodes, or `_dead_letter.<source>`.
    pub inputs: Vec<String>,
}

impl Pipeline {
    /// The sources then the nodes in the order they run (each after what it reads).
    pub fn graph(&self) -> Vec<GraphNode> {
        let sources = self.sources.iter().map(|s| GraphNode {
            name: s.name.clone(),
            kind: NodeKind::Source,
            operator: None,
            inputs: Vec::new(),
        });
        let nodes = self.nodes.iter().map(|n| GraphNode {
            name: n.name.clone(),
            kind: if n.sink.is_some() {
                NodeKind::Table
            } else {
                NodeKind::View
            },
            operator: n.operator.as_ref().map(|o| o.describe()),
            inputs: n.inputs.clone(),
        });
        sources.chain(nodes).collect()
    }
}
