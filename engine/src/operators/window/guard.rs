//! What may run below a window aggregate: only operators that treat rows one by one, since
//! the window's state spans epochs while everything below it sees one epoch's rows.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::ExecutionPlan;

/// Refuses a windowed query whose rows pass through an operator that combines rows before the
/// window aggregate (another aggregate, DISTINCT, a window function, a LIMIT). Such an operator
/// runs over each epoch's rows alone, while the window's state spans epochs, so its answer would
/// depend on how the stream was cut into epochs.
pub(super) fn check_input_is_row_by_row(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::coop::CooperativeExec;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
    use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
    use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
    use datafusion::physical_plan::unnest::UnnestExec;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
    let any = plan.as_ref();
    let why = if any.is::<AggregateExec>() {
        Some("aggregates its rows before the window (a DISTINCT, GROUP BY or aggregate subquery)")
    } else if any.is::<WindowAggExec>() || any.is::<BoundedWindowAggExec>() {
        Some("computes an OVER (...) window function before the window aggregate")
    } else if plan.fetch().is_some() {
        Some("limits its rows (LIMIT) before the window aggregate")
    } else if any.is::<ProjectionExec>()
        || any.is::<FilterExec>()
        || any.is::<RepartitionExec>()
        || any.is::<CoalescePartitionsExec>()
        || any.is::<datafusion::datasource::source::DataSourceExec>()
        || any.is::<UnionExec>()
        || any.is::<InterleaveExec>()
        || any.is::<UnnestExec>()
        || any.is::<EmptyExec>()
        || any.is::<PlaceholderRowExec>()
        || any.is::<SortExec>()
        || any.is::<SortPreservingMergeExec>()
        || any.is::<HashJoinExec>()
        || any.is::<NestedLoopJoinExec>()
        || any.is::<CrossJoinExec>()
        // Deprecated in DataFusion 55, so matched by name; older rules may still plan it.
        || plan.name() == "CoalesceBatchesExec"
        || any.is::<CooperativeExec>()
    {
        None
    } else {
        Some("runs an operator before the window aggregate that Weir cannot keep across epochs")
    };
    if let Some(why) = why {
        return Err(DataFusionError::Plan(format!(
            "{why} ({}): it would see each epoch's rows alone, so its answer would depend on \
             how the stream is cut into epochs",
            plan.name()
        )));
    }
    plan.children()
        .into_iter()
        .try_for_each(check_input_is_row_by_row)
}
