//! The interval join operator: a join of two streams on keys and an event-time bound, across
//! epochs and restarts (Flink's interval join, Spark's stream-stream join with a time range).
//!
//! - `node`: the logical plan node the planner puts where SQL joins two streams.
//! - `state`: each side's rows, indexed by key, with their event times and whether they found
//!   a partner.
//! - `sides`: one side's epoch input: keys, event times, late rows.
//!
//! Each epoch both sides' rows are read and late rows (behind the watermark) split off. A new
//! left row is probed against the right rows held, then the new right rows against every left
//! row held (new ones included), so each pair is tried exactly once; a pair that satisfies the
//! whole ON clause is emitted at once. At the watermark a row whose time bound has passed can
//! match nothing more: it is dropped, and on an outer side emitted with NULLs if it never
//! matched. The output's event times can lag the watermark by the bound
//! ([`TimeBound::output_delay_ms`]); steps downstream get a watermark held back by that much.

pub mod node;
mod sides;
pub mod state;

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use datafusion::common::{Column, JoinType, NullEquality};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{collect, PhysicalExpr};
use datafusion::prelude::SessionContext;

use self::node::{JoinNode, TimeBound};
use self::sides::{SideInput, SidePlan};
use self::state::{EntryId, JoinSide};
use crate::dead_letter::LATE_BEFORE_WATERMARK;
use crate::error::{EngineError, Result};
use crate::operators::step_exec::{plan_over_released, StatefulStepExec};
use crate::operators::{
    stateful_steps, EpochStep, LateRows, OperatorMetrics, OperatorOutput, StateLayout,
    StateSnapshot, StoredState, StreamOperator,
};

/// The version of the join state format in checkpoints.
pub const JOIN_STATE_FORMAT: u32 = 1;

/// How many candidate pairs are checked against the ON clause at once.
const PAIRS_PER_BATCH: usize = 8192;

/// A join as the planner found it.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The left side's event-time column.
    pub left_time: Column,
    /// The right side's event-time column.
    pub right_time: Column,
    /// How far apart the two event times may be.
    pub bound: TimeBound,
    /// The join as text; checkpoints refuse state of another definition.
    pub definition: String,
    /// The source whose dead-letter table receives late rows, when it asks for them.
    pub late_rows_to: Option<String>,
}

/// What `open` found in the table's plan.
struct Opened {
    join_type: JoinType,
    left: SidePlan,
    right: SidePlan,
    left_rows: JoinSide,
    right_rows: JoinSide,
    converter: RowConverter,
    /// The rest of the ON clause (the time bound among it), over a joined row.
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The join's output schema.
    output_schema: SchemaRef,
}

/// An interval join as a [`StreamOperator`].
pub struct JoinOperator {
    config: JoinConfig,
    opened: Option<Opened>,
    last: OperatorMetrics,
}

impl JoinOperator {
    /// A join operator for `config`; `open` finds its sides in the table's plan.
    pub fn new(config: JoinConfig) -> Self {
        JoinOperator {
            config,
            opened: None,
            last: OperatorMetrics::default(),
        }
    }

    fn opened(&mut self) -> Result<&mut Opened> {
        self.opened
            .as_mut()
            .ok_or_else(|| EngineError::internal("the join operator was used before it was opened"))
    }
}

/// The joined rows of pairs (`left_ids[i]`, `right_ids[i]`) in the join's output schema.
fn joined(
    schema: &SchemaRef,
    left: &JoinSide,
    left_ids: &[EntryId],
    right: &JoinSide,
    right_ids: &[EntryId],
) -> Result<RecordBatch> {
    let l = left.rows(left_ids)?;
    let r = right.rows(right_ids)?;
    let columns: Vec<ArrayRef> = l.columns().iter().chain(r.columns()).cloned().collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Rows of one side that never matched, with NULLs for the other side's columns.
fn unmatched(schema: &SchemaRef, rows: RecordBatch, left_side: bool) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let split = if left_side {
        rows.num_columns()
    } else {
        schema.fields().len() - rows.num_columns()
    };
    let nulls = |range: std::ops::Range<usize>| -> Vec<ArrayRef> {
        range
            .map(|i| new_null_array(schema.field(i).data_type(), n))
            .collect()
    };
    let columns: Vec<ArrayRef> = if left_side {
        rows.columns()
            .iter()
            .cloned()
            .chain(nulls(split..schema.fields().len()))
            .collect()
    } else {
        nulls(0..split)
            .into_iter()
            .chain(rows.columns().iter().cloned())
            .collect()
    };
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl Opened {
    /// Checks candidate pairs against the ON clause: returns the matching joined rows and
    /// marks both rows of each match.
    fn matches(&mut self, pairs: &[(EntryId, EntryId)]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for chunk in pairs.chunks(PAIRS_PER_BATCH) {
            let (l, r): (Vec<EntryId>, Vec<EntryId>) = chunk.iter().copied().unzip();
            let rows = joined(
                &self.output_schema,
                &self.left_rows,
                &l,
                &self.right_rows,
                &r,
            )?;
            let keep = match &self.filter {
                None => BooleanArray::from(vec![true; rows.num_rows()]),
                Some(filter) => {
                    let value = filter.evaluate(&rows)?.into_array(rows.num_rows())?;
                    let mask = value
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| EngineError::internal("a join condition is not boolean"))?
                        .clone();
                    mask
                }
            };
            for (i, &(li, ri)) in chunk.iter().enumerate() {
                if keep.is_valid(i) && keep.value(i) {
                    self.left_rows.set_matched(li);
                    self.right_rows.set_matched(ri);
                }
            }
            let kept = filter_record_batch(&rows, &keep)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        Ok(out)
    }

    /// Adds both sides' new rows and returns the pairs to check: new left rows against the
    /// right rows held before, then new right rows against every left row held.
    fn add_and_pair(&mut self, left: SideInput, right: SideInput) -> Vec<(EntryId, EntryId)> {
        let mut pairs = Vec::new();
        let new_left = left.insert_into(&mut self.left_rows);
        for id in new_left {
            if !self.left_rows.is_keyed(id) {
                continue;
            }
            for &other in self.right_rows.probe(self.left_rows.key(id)) {
                pairs.push((id, other));
            }
        }
        let new_right = right.insert_into(&mut self.right_rows);
        for id in new_right {
            if !self.right_rows.is_keyed(id) {
                continue;
            }
            for &other in self.left_rows.probe(self.right_rows.key(id)) {
                pairs.push((other, id));
            }
        }
        pairs
    }

    /// Drops the rows whose bound the watermark passed; returns the unmatched rows of outer
    /// sides with NULLs.
    fn evict(&mut self, watermark_ms: Option<i64>, bound: TimeBound) -> Result<Vec<RecordBatch>> {
        let Some(wm) = watermark_ms else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let left_gone = self
            .left_rows
            .evict(|t| t.saturating_add(bound.upper_ms) < wm);
        if matches!(self.join_type, JoinType::Left | JoinType::Full) && !left_gone.is_empty() {
            let rows = self.left_rows.rows(&left_gone)?;
            out.push(unmatched(&self.output_schema, rows, true)?);
        }
        let right_gone = self
            .right_rows
            .evict(|t| t.saturating_sub(bound.lower_ms) < wm);
        if matches!(self.join_type, JoinType::Right | JoinType::Full) && !right_gone.is_empty() {
            let rows = self.right_rows.rows(&right_gone)?;
            out.push(unmatched(&self.output_schema, rows, false)?);
        }
        self.left_rows.compact(&self.converter)?;
        self.right_rows.compact(&self.converter)?;
        Ok(out)
    }
}

/// The join inside the table's (optimized) plan.
fn find_join(plan: &LogicalPlan) -> Result<datafusion::logical_expr::Join> {
    let steps = stateful_steps(plan);
    let node = steps
        .iter()
        .find_map(|s| s.as_extension().as_any().downcast_ref::<JoinNode>())
        .ok_or_else(|| EngineError::internal("the plan has no join step"))?;
    Ok(node.join()?.clone())
}

#[async_trait::async_trait]
impl StreamOperator for JoinOperator {
    fn describe(&self) -> String {
        format!("{}, append output", self.config.definition)
    }

    async fn open(&mut self, ctx: &SessionContext, plan: &LogicalPlan) -> Result<StateLayout> {
        let optimized = ctx.state().optimize(plan)?;
        let join = find_join(&optimized)?;
        if !matches!(
            join.join_type,
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        ) {
            return Err(EngineError::plan_refused(format!(
                "a {} join of two streams is not supported; use INNER, LEFT, RIGHT or FULL",
                node::join_kind(join.join_type)
            )));
        }
        if join.on.is_empty() {
            return Err(EngineError::plan_refused(
                "a join of two streams needs at least one equality of keys (a.id = b.id)",
            ));
        }
        if join.null_equality == NullEquality::NullEqualsNull {
            return Err(EngineError::plan_refused(
                "a join of two streams on IS NOT DISTINCT FROM is not supported: join on `=`",
            ));
        }
        let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on.iter().cloned().unzip();
        let state = ctx.state();
        let left = SidePlan::new(
            &state,
            join.left.as_ref().clone(),
            &left_keys,
            &self.config.left_time,
        )?;
        let mut right = SidePlan::new(
            &state,
            join.right.as_ref().clone(),
            &right_keys,
            &self.config.right_time,
        )?;
        // Both sides' keys are encoded as the left's types, so equal values compare equal.
        right.key_types = left.key_types.clone();
        let converter = RowConverter::new(left.sort_fields())?;
        let filter = match &join.filter {
            Some(f) => Some(state.create_physical_expr(f.clone(), &join.schema)?),
            None => None,
        };
        let output_schema: SchemaRef = Arc::new(join.schema.as_arrow().clone());
        let opened = Opened {
            join_type: join.join_type,
            left_rows: JoinSide::new(left.schema()),
            right_rows: JoinSide::new(right.schema()),
            left,
            right,
            converter,
            filter,
            output_schema,
        };
        let layout = sides::layout(&opened.left, &opened.right, &self.config.definition);
        self.opened = Some(opened);
        Ok(layout)
    }

    fn restore(&mut self, state: StoredState) -> Result<()> {
        let opened = self.opened()?;
        for batch in state.batches {
            let (left, right) = sides::split_snapshot(&batch, &opened.left, &opened.right)?;
            let left = opened.left.restored(left, &opened.converter)?;
            let right = opened.right.restored(right, &opened.converter)?;
            left.insert_into(&mut opened.left_rows);
            right.insert_into(&mut opened.right_rows);
        }
        Ok(())
    }

    async fn process_epoch(&mut self, step: EpochStep<'_>) -> Result<OperatorOutput> {
        let (ctx, plan_error) = (step.ctx, EngineError::plan(step.node, step.epoch));
        let bound = self.config.bound;
        let keep_late = self.config.late_rows_to.is_some();
        let opened = self.opened()?;
        let late_ms = step.late_watermark_ms;
        let left = opened
            .left
            .read(ctx, late_ms, &opened.converter, keep_late)
            .await
            .map_err(plan_error)?;
        let right = opened
            .right
            .read(ctx, late_ms, &opened.converter, keep_late)
            .await
            .map_err(plan_error)?;
        let rows_in = left.rows_in + right.rows_in;
        let late_count = left.late_count + right.late_count;
        let mut late_rows = left.late_rows.clone();
        late_rows.extend(right.late_rows.iter().cloned());
        let pairs = opened.add_and_pair(left, right);
        let mut released = opened.matches(&pairs)?;
        released.extend(opened.evict(step.watermark_ms, bound)?);
        let rows_out = released.iter().map(|b| b.num_rows() as u64).sum();
        let state_rows = (opened.left_rows.len() + opened.right_rows.len()) as u64;
        let state_bytes = (opened.left_rows.memory_size() + opened.right_rows.memory_size()) as u64;
        // The rest of the table's plan over the joined rows.
        let physical = ctx
            .state()
            .create_physical_plan(step.plan)
            .await
            .map_err(plan_error)?;
        let step_node = StatefulStepExec::find(&physical)
            .ok_or_else(|| EngineError::internal("the plan has no join step"))?;
        let rest = plan_over_released(&ctx.state(), &physical, &step_node, released)
            .map_err(plan_error)?;
        let rows = collect(rest, ctx.task_ctx()).await.map_err(plan_error)?;
        self.last = OperatorMetrics {
            rows_in,
            rows_out,
            late_rows: late_count,
            state_rows,
            state_bytes,
        };
        Ok(OperatorOutput {
            rows,
            replaced: Vec::new(),
            late: LateRows {
                count: late_count,
                rows: late_rows,
                dead_letter_to: self.config.late_rows_to.clone(),
                reason: LATE_BEFORE_WATERMARK,
                time_column: self.config.left_time.name.clone(),
            },
        })
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let opened = self.opened.as_ref().ok_or_else(|| {
            EngineError::internal("the join operator was used before it was opened")
        })?;
        let layout = sides::layout(&opened.left, &opened.right, &self.config.definition);
        let batch = sides::snapshot(&layout.schema, &opened.left_rows, &opened.right_rows)?;
        Ok(StateSnapshot {
            layout,
            batches: vec![batch],
        })
    }

    fn metrics(&self) -> OperatorMetrics {
        self.last
    }

    fn output_delay_ms(&self) -> i64 {
        self.config.bound.output_delay_ms()
    }
}
