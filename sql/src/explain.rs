//! `weir explain`: the pipeline's sources, its nodes in run order (with each stateful step's
//! operator, output mode and state) and every node's optimised logical and physical plan.

use datafusion::error::DataFusionError;
use datafusion::physical_plan::displayable;
use weir_engine::operators::stateful_steps;

use crate::planner::PlannedPipeline;

impl PlannedPipeline {
    /// The DAG and each node's optimised logical and physical plan, for `weir explain`.
    pub async fn explain(&self) -> Result<String, DataFusionError> {
        let mut out = String::new();
        out.push_str(&format!("pipeline {}\n\nsources:\n", self.name));
        for s in &self.sources {
            let wm = s
                .watermark
                .as_ref()
                .map(|(c, d)| format!(", watermark {c} - {}s", d.as_secs()))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} (connector {}{wm}) at {}\n",
                s.name, s.connector, s.location
            ));
            for f in s.table.schema_ref().fields() {
                out.push_str(&format!(
                    "    {}: {}{}\n",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " NOT NULL" }
                ));
            }
        }
        out.push_str("\nnodes (in run order):\n");
        for n in &self.nodes {
            let target = match (&n.sink, &n.step_of) {
                (Some(s), _) => format!(" -> {}", s.planned.describe()),
                (None, Some(table)) => format!(" (a step of `{table}`, not stored)"),
                (None, None) => " (view, not stored)".to_string(),
            };
            let mode = match n.sink.as_ref().and_then(|s| s.update_keys.as_ref()) {
                Some(_) => "update",
                None => "append",
            };
            let window = stateful_steps(&n.plan)
                .first()
                .map(|step| {
                    let step = step.node();
                    format!(
                        " [{}; {mode} output; state: {}]",
                        step.describe(),
                        step.state()
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} <- [{}]{target}{window}\n",
                n.name,
                n.inputs.join(", ")
            ));
        }
        for n in &self.nodes {
            let state = self.ctx.state();
            let optimized = state.optimize(&n.plan)?;
            let physical = state.create_physical_plan(&n.plan).await?;
            out.push_str(&format!(
                "\n== {} ({}) ==\nlogical plan:\n{}\nphysical plan:\n{}",
                n.name,
                n.location,
                optimized.display_indent(),
                displayable(physical.as_ref()).indent(true)
            ));
        }
        Ok(out)
    }
}
