//! The window operator: TUMBLE, HOP and SESSION aggregates kept across epochs.
//!
//! - `state`: the partial aggregates of every open (window, keys) group, merged epoch after
//!   epoch with DataFusion's own accumulators, finalised when the watermark closes a window.
//! - `exec`: one epoch of a windowed table: its rows below the aggregate are streamed, late
//!   rows split off, the rest folded into the state; closed (or, in update mode, changed)
//!   groups run through the rest of the table's plan.
//! - `input`: carrying each row's event time to the late-row dead letters.
//! - `node`: the logical plan node the planner puts where SQL asks for a window.
//! - `sessions`: merging overlapping sessions; `guard`: what may run below the aggregate.

mod exec;
mod guard;
mod input;
pub mod node;
mod sessions;
mod state;

pub use input::EVENT_TIME_COLUMN;
pub use state::{UpdatedRows, WindowAggregateState};

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::dead_letter::{LATE_BEFORE_WATERMARK, LATE_WINDOW_ENDED};
use crate::error::{EngineError, Result};
use crate::operators::step_exec::StatefulStepExec;
use crate::operators::{
    EpochStep, LateRows, OperatorMetrics, OperatorOutput, StateLayout, StateSnapshot, StoredState,
    StreamOperator,
};

/// The column that starts a window (and a session).
pub const WINDOW_START: &str = "window_start";

/// The version of the window state format in checkpoints (partial aggregate states as Arrow
/// IPC, one row per open group). State files from before versions were recorded are version 1.
pub const WINDOW_STATE_FORMAT: u32 = 1;

/// How a table's rows are windowed, as the planner found it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    /// The column that ends a window; a window is final once the watermark passes it.
    pub window_end: String,
    /// The windows are sessions: overlapping windows of the same keys merge, and a row is late
    /// when its own time is before the watermark.
    pub sessions: bool,
    /// Update output mode: every epoch emits the current value of each group that changed
    /// (the sink MERGEs them), instead of each window once when it closes.
    pub update_mode: bool,
    /// The event-time column the window reads (late rows' `event_time`).
    pub time_column: String,
    /// The window as text (`TUMBLE on ts: size 1min`).
    pub window: String,
    /// The source whose dead-letter table receives late rows (`late_data = 'dead_letter'`);
    /// otherwise they are counted and dropped.
    pub late_rows_to: Option<String>,
}

/// A windowed aggregate as a [`StreamOperator`].
#[derive(Debug)]
pub struct WindowOperator {
    config: WindowConfig,
    /// Built by `open` from the table's physical plan.
    state: Option<WindowAggregateState>,
    last: OperatorMetrics,
}

impl WindowOperator {
    /// A window operator for `config`; `open` builds its state from the table's plan.
    pub fn new(config: WindowConfig) -> Self {
        WindowOperator {
            config,
            state: None,
            last: OperatorMetrics::default(),
        }
    }

    fn state(&self) -> Result<&WindowAggregateState> {
        self.state.as_ref().ok_or_else(not_opened)
    }

    fn layout(state: &WindowAggregateState) -> StateLayout {
        StateLayout {
            schema: state.state_schema().clone(),
            definition: state.definition().to_string(),
            format_version: WINDOW_STATE_FORMAT,
        }
    }
}

/// The window step of a table's physical plan (the planner marks it, see `node`).
pub(crate) fn window_step(
    physical: &Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    StatefulStepExec::find(physical).ok_or_else(|| {
        datafusion::error::DataFusionError::Plan(
            "the plan has no window step (TUMBLE, HOP or SESSION with GROUP BY)".into(),
        )
    })
}

fn not_opened() -> EngineError {
    EngineError::DataFusion(datafusion::error::DataFusionError::Internal(
        "the window operator was used before it was opened".into(),
    ))
}

#[async_trait::async_trait]
impl StreamOperator for WindowOperator {
    fn describe(&self) -> String {
        let mode = if self.config.update_mode {
            "update"
        } else {
            "append"
        };
        format!(
            "window {}, {mode} output, state: one row per open (window, keys) group",
            self.config.window
        )
    }

    async fn open(&mut self, ctx: &SessionContext, plan: &LogicalPlan) -> Result<StateLayout> {
        let physical = ctx.state().create_physical_plan(plan).await?;
        let step = window_step(&physical)?;
        let mut state = WindowAggregateState::from_plan(
            step.children().first().copied().unwrap_or(&step),
            &self.config.window_end,
        )?;
        if self.config.sessions {
            state = state.with_sessions(WINDOW_START)?;
        }
        if self.config.update_mode {
            state = state.with_replaced_sessions();
        }
        state = state.with_window_definition(&self.config.window);
        let layout = Self::layout(&state);
        self.state = Some(state);
        Ok(layout)
    }

    fn restore(&mut self, state: StoredState) -> Result<()> {
        self.state
            .as_mut()
            .ok_or_else(not_opened)?
            .restore(state.batches);
        Ok(())
    }

    async fn process_epoch(&mut self, step: EpochStep<'_>) -> Result<OperatorOutput> {
        let state = self.state.as_mut().ok_or_else(not_opened)?;
        let out = exec::execute_windowed(&step, &self.config, state).await?;
        let rows_out = out.rows.iter().map(|b| b.num_rows() as u64).sum();
        let late = LateRows {
            count: out.late,
            rows: out.late_rows,
            dead_letter_to: self.config.late_rows_to.clone(),
            reason: if self.config.sessions {
                LATE_BEFORE_WATERMARK
            } else {
                LATE_WINDOW_ENDED
            },
            time_column: out.late_time_column,
        };
        self.last = OperatorMetrics {
            rows_in: out.rows_in,
            rows_out,
            late_rows: late.count,
            state_rows: state.open_groups() as u64,
            state_bytes: state
                .state()
                .iter()
                .map(|b| b.get_array_memory_size() as u64)
                .sum(),
        };
        Ok(OperatorOutput {
            rows: out.rows,
            replaced: out.replaced,
            late,
        })
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let state = self.state()?;
        Ok(StateSnapshot {
            layout: Self::layout(state),
            batches: state.state().to_vec(),
        })
    }

    fn metrics(&self) -> OperatorMetrics {
        let mut metrics = self.last;
        if let Ok(state) = self.state() {
            metrics.state_rows = state.open_groups() as u64;
        }
        metrics
    }
}
