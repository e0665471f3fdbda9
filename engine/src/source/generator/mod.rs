//! The `generator` connector: deterministic e-commerce events, for demos, tests and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, FieldRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
pub mod ecommerce;
pub mod reference_data;

use crate::options::Options;
use crate::source::raw::RawBatch;
use crate::source::{parse_range, Source};
use ecommerce::{EcommerceConfig, EcommerceGenerator};

/// Events per epoch unless `max_events_per_trigger` says otherwise.
const DEFAULT_EVENTS_PER_TRIGGER: u64 = 100_000;

/// A range of event indices `[start, end)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct EventRange {
    start: u64,
    end: u64,
}

/// Generates `events` e-commerce events (unbounded when 0), at most `events_per_second`.
#[derive(Debug)]
pub struct GeneratorSource {
    name: String,
    generator: EcommerceGenerator,
    total: Option<u64>,
    events_per_second: u64,
    per_trigger: u64,
    /// Next event index to read.
    position: u64,
    /// Where this process started and when, for the rate limit.
    started: Option<(u64, Instant)>,
}

impl GeneratorSource {
    /// Reads the connector's options: `kind`, `events`, `seed`, `events_per_second`,
    /// `late_ratio`, `duplicate_ratio`, `malformed_ratio`, `max_events_per_trigger`.
    pub fn from_options(name: &str, options: &mut Options) -> Result<Self> {
        options.take_choice("kind", &["ecommerce"])?;
        let defaults = EcommerceConfig::default();
        let config = EcommerceConfig {
            seed: options.take_u64("seed")?.unwrap_or(defaults.seed),
            late_ratio: options
                .take_ratio("late_ratio")?
                .unwrap_or(defaults.late_ratio),
            duplicate_ratio: options
                .take_ratio("duplicate_ratio")?
                .unwrap_or(defaults.duplicate_ratio),
            malformed_ratio: options
                .take_ratio("malformed_ratio")?
                .unwrap_or(defaults.malformed_ratio),
            users: options.take_u64("users")?.unwrap_or(defaults.users).max(1),
            ..defaults
        };
        let total = match options.take_u64("events")?.unwrap_or(1_000_000) {
            0 => None,
            n => Some(n),
        };
        let per_trigger = options
            .take_u64("max_events_per_trigger")?
            .unwrap_or(DEFAULT_EVENTS_PER_TRIGGER);
        if per_trigger == 0 {
            return Err(EngineError::option(
                "max_events_per_trigger",
                "must be at least 1",
            ));
        }
        Ok(GeneratorSource {
            name: name.to_string(),
            generator: EcommerceGenerator::new(config),
            total,
            events_per_second: options.take_u64("events_per_second")?.unwrap_or(0),
            per_trigger,
            position: 0,
            started: None,
        })
    }
}

impl Source for GeneratorSource {
    fn metadata_fields(&self) -> Vec<FieldRef> {
        vec![Arc::new(Field::new("_offset", DataType::Int64, false))]
    }

    fn restore(&mut self, history: &[Value]) -> Result<()> {
        if let Some(last) = history.last() {
            let r: EventRange = parse_range(&self.name, last)?;
            self.position = r.end;
        }
        Ok(())
    }

    fn plan_next(&mut self, available_now: bool) -> Result<Option<Value>> {
        let start = self.position;
        let mut end = start.saturating_add(self.per_trigger);
        if let Some(total) = self.total {
            end = end.min(total);
        } else if available_now && self.events_per_second == 0 {
            return Err(EngineError::option_hint(
                "events",
                format!(
                    "source `{}` is unbounded (events = 0) and unthrottled, so --once would never \
                     finish",
                    self.name
                ),
                "set events = N or events_per_second",
            ));
        }
        if self.events_per_second > 0 && !(available_now && self.total.is_some()) {
            let (origin, at) = *self.started.get_or_insert((start, Instant::now()));
            let due = origin + (at.elapsed().as_secs_f64() * self.events_per_second as f64) as u64;
            end = end.min(due.max(start));
        }
        if end <= start {
            return Ok(None);
        }
        Ok(Some(
            serde_json::to_value(EventRange { start, end })
                .map_err(|e| EngineError::option("events", format!("cannot record range: {e}")))?,
        ))
    }

    fn read(&mut self, range: &Value) -> Result<RawBatch> {
        let r: EventRange = parse_range(&self.name, range)?;
        let n = (r.end - r.start) as usize;
        let mut raw = RawBatch {
            data: Vec::with_capacity(n * 420),
            records: Vec::with_capacity(n),
            metadata: Vec::new(),
        };
        for i in r.start..r.end {
            let start = raw.data.len();
            self.generator.write_event(i, &mut raw.data);
            raw.records.push(start..raw.data.len());
        }
        let offsets = Int64Array::from_iter_values((r.start..r.end).map(|i| i as i64));
        raw.metadata
            .push((self.metadata_fields()[0].clone(), Arc::new(offsets)));
        Ok(raw)
    }

    fn advance(&mut self, range: &Value) -> Result<()> {
        let r: EventRange = parse_range(&self.name, range)?;
        self.position = self.position.max(r.end);
        Ok(())
    }

    fn describe_position(&self) -> String {
        match self.total {
            Some(t) => format!("{}/{} events", self.position, t),
            None => format!("{} events", self.position),
        }
    }
}
