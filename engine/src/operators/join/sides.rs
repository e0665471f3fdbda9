//! One side of a join at run time: its plan, its keys and event time ([`SidePlan`]), one
//! epoch's rows of it ([`SideInput`]), and both sides stored together in one snapshot.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt8Array,
};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::{collect, PhysicalExpr};
use datafusion::prelude::SessionContext;

use super::state::{EntryId, JoinSide};
use super::JOIN_STATE_FORMAT;
use crate::error::{EngineError, Result};
use crate::operators::{times_ms, StateLayout};

/// How to read one side each epoch.
pub(super) struct SidePlan {
    plan: LogicalPlan,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The types keys are compared as (the left side's).
    pub(super) key_types: Vec<DataType>,
    time_index: usize,
    schema: SchemaRef,
}

/// One epoch's on-time rows of a side, with their keys, plus what was late.
pub(super) struct SideInput {
    rows: RecordBatch,
    keys: Rows,
    keyed: Vec<bool>,
    times_ms: Vec<i64>,
    matched: Vec<bool>,
    /// Rows read.
    pub(super) rows_in: u64,
    /// Rows behind the watermark.
    pub(super) late_count: u64,
    /// Those rows, when they are dead-lettered.
    pub(super) late_rows: Vec<RecordBatch>,
}

impl SidePlan {
    /// The side `plan` of a join, compared on `keys` (expressions over its rows), with event
    /// time `time`.
    pub(super) fn new(
        state: &SessionState,
        plan: LogicalPlan,
        keys: &[Expr],
        time: &Column,
    ) -> Result<Self> {
        let schema = plan.schema();
        let time_index = schema.index_of_column(time).map_err(|_| {
            EngineError::plan_refused(format!(
                "the join's event-time column `{}` is not a column of its side",
                time.flat_name()
            ))
        })?;
        let keys = keys
            .iter()
            .map(|k| state.create_physical_expr(k.clone(), schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let arrow_schema: SchemaRef = Arc::new(schema.as_arrow().clone());
        let key_types = keys
            .iter()
            .map(|k| k.data_type(&arrow_schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        times_ms(&arrow::array::new_empty_array(
            arrow_schema.field(time_index).data_type(),
        ))?;
        Ok(SidePlan {
            plan,
            keys,
            key_types,
            time_index,
            schema: arrow_schema,
        })
    }

    /// The side's rows' schema.
    pub(super) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// How keys are encoded for comparison.
    pub(super) fn sort_fields(&self) -> Vec<SortField> {
        self.key_types.iter().cloned().map(SortField::new).collect()
    }

    /// The encoded keys of `rows`, and which have no NULL.
    fn keys_of(&self, rows: &RecordBatch, converter: &RowConverter) -> Result<(Rows, Vec<bool>)> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.keys.len());
        for (key, to) in self.keys.iter().zip(&self.key_types) {
            let value = key.evaluate(rows)?.into_array(rows.num_rows())?;
            columns.push(cast(&value, to)?);
        }
        let keyed = (0..rows.num_rows())
            .map(|row| columns.iter().all(|c| c.is_valid(row)))
            .collect();
        Ok((converter.convert_columns(&columns)?, keyed))
    }

    /// This epoch's rows of the side: those behind `late_ms` split off (kept when
    /// `keep_late`), the rest with keys and event times.
    pub(super) async fn read(
        &self,
        ctx: &SessionContext,
        late_ms: Option<i64>,
        converter: &RowConverter,
        keep_late: bool,
    ) -> std::result::Result<SideInput, DataFusionError> {
        let physical = ctx.state().create_physical_plan(&self.plan).await?;
        let batches = collect(physical, ctx.task_ctx()).await?;
        let all = concat_batches(&self.schema, &batches)?;
        let to_df = |e: EngineError| DataFusionError::External(Box::new(e));
        let times = times_ms(all.column(self.time_index)).map_err(to_df)?;
        let on_time: Vec<bool> = times
            .iter()
            .map(|&t| late_ms.is_none_or(|wm| t >= wm))
            .collect();
        let late_count = on_time.iter().filter(|t| !**t).count() as u64;
        let mut late_rows = Vec::new();
        let rows = if late_count == 0 {
            all.clone()
        } else {
            let mask = BooleanArray::from(on_time.clone());
            if keep_late {
                let late = arrow::compute::not(&mask)?;
                late_rows.push(filter_record_batch(&all, &late)?);
            }
            filter_record_batch(&all, &mask)?
        };
        let times_ms: Vec<i64> = times
            .iter()
            .zip(&on_time)
            .filter(|(_, on)| **on)
            .map(|(t, _)| *t)
            .collect();
        let (keys, keyed) = self.keys_of(&rows, converter).map_err(to_df)?;
        Ok(SideInput {
            matched: vec![false; rows.num_rows()],
            rows,
            keys,
            keyed,
            times_ms,
            rows_in: all.num_rows() as u64,
            late_count,
            late_rows,
        })
    }

    /// Stored rows of the side from a snapshot, with their times and matched flags.
    pub(super) fn restored(&self, stored: Stored, converter: &RowConverter) -> Result<SideInput> {
        let (keys, keyed) = self.keys_of(&stored.rows, converter)?;
        Ok(SideInput {
            rows: stored.rows,
            keys,
            keyed,
            times_ms: stored.times_ms,
            matched: stored.matched,
            rows_in: 0,
            late_count: 0,
            late_rows: Vec::new(),
        })
    }
}

impl SideInput {
    /// Stores the rows in `side`; returns their entries.
    pub(super) fn insert_into(self, side: &mut JoinSide) -> Range<EntryId> {
        side.insert(
            self.rows,
            self.keys,
            &self.keyed,
            &self.times_ms,
            &self.matched,
        )
    }
}

/// The state's columns before the sides' rows: which side, event time, matched.
const SIDE: &str = "__weir_side";
const TIME: &str = "__weir_time_ms";
const MATCHED: &str = "__weir_matched";

/// The layout of a join's state: one row per stored row of either side, the other side's
/// columns NULL.
pub(super) fn layout(left: &SidePlan, right: &SidePlan, definition: &str) -> StateLayout {
    let mut fields = vec![
        Field::new(SIDE, DataType::UInt8, false),
        Field::new(TIME, DataType::Int64, false),
        Field::new(MATCHED, DataType::Boolean, false),
    ];
    for (prefix, side) in [("l", left), ("r", right)] {
        for (i, f) in side.schema.fields().iter().enumerate() {
            fields.push(Field::new(
                format!("{prefix}{i}:{}", f.name()),
                f.data_type().clone(),
                true,
            ));
        }
    }
    StateLayout {
        schema: Arc::new(Schema::new(fields)),
        definition: definition.to_string(),
        format_version: JOIN_STATE_FORMAT,
    }
}

/// Both sides' stored rows as one batch of `schema` (see [`layout`]).
pub(super) fn snapshot(
    schema: &SchemaRef,
    left: &JoinSide,
    right: &JoinSide,
) -> Result<RecordBatch> {
    let (l, l_times, l_matched) = left.live_rows()?;
    let (r, r_times, r_matched) = right.live_rows()?;
    let (nl, nr) = (l.num_rows(), r.num_rows());
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt8Array::from([vec![0u8; nl], vec![1u8; nr]].concat())),
        Arc::new(Int64Array::from([l_times, r_times].concat())),
        Arc::new(BooleanArray::from([l_matched, r_matched].concat())),
    ];
    let stacked = |rows: &RecordBatch, other_rows: usize, first: bool| -> Result<Vec<ArrayRef>> {
        rows.columns()
            .iter()
            .map(|c| {
                let nulls = new_null_array(c.data_type(), other_rows);
                let parts: [&dyn Array; 2] = if first {
                    [c.as_ref(), nulls.as_ref()]
                } else {
                    [nulls.as_ref(), c.as_ref()]
                };
                Ok(arrow::compute::concat(&parts)?)
            })
            .collect()
    };
    columns.extend(stacked(&l, nr, true)?);
    columns.extend(stacked(&r, nl, false)?);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One side's rows as a snapshot stored them.
pub(super) struct Stored {
    rows: RecordBatch,
    times_ms: Vec<i64>,
    matched: Vec<bool>,
}

/// Splits a snapshot batch back into each side's rows.
pub(super) fn split_snapshot(
    batch: &RecordBatch,
    left: &SidePlan,
    right: &SidePlan,
) -> Result<(Stored, Stored)> {
    let side = column::<UInt8Array>(batch, 0)?;
    let nl = left.schema.fields().len();
    let mut out = Vec::new();
    for (tag, plan, first) in [(0u8, left, 3), (1u8, right, 3 + nl)] {
        let mask = BooleanArray::from(
            (0..side.len())
                .map(|i| side.value(i) == tag)
                .collect::<Vec<_>>(),
        );
        let mine = filter_record_batch(batch, &mask)?;
        let columns: Vec<ArrayRef> = (first..first + plan.schema.fields().len())
            .map(|i| mine.column(i).clone())
            .collect();
        let times = column::<Int64Array>(&mine, 1)?;
        let matched = column::<BooleanArray>(&mine, 2)?;
        out.push(Stored {
            rows: RecordBatch::try_new(plan.schema.clone(), columns)?,
            times_ms: times.values().to_vec(),
            matched: (0..matched.len()).map(|i| matched.value(i)).collect(),
        });
    }
    let right_rows = out
        .pop()
        .ok_or_else(|| EngineError::internal("no right side"))?;
    let left_rows = out
        .pop()
        .ok_or_else(|| EngineError::internal("no left side"))?;
    Ok((left_rows, right_rows))
}

fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| EngineError::internal("a join snapshot column has the wrong type"))
}
