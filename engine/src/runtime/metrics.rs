//! Each finished epoch recorded as Prometheus-style metrics through the `metrics` facade: the
//! binary installs an exporter (`weir serve`'s `/metrics`, `weir run --metrics-addr`); without
//! one the calls do nothing. Every series carries the `pipeline` label, and `source`, `table`
//! or `operator` where it is about one of them.

use ::metrics::{counter, gauge, histogram};

use super::progress::EpochReport;

/// Records one epoch of `pipeline`.
pub fn record_epoch(pipeline: &str, report: &EpochReport) {
    let p = pipeline.to_string();
    counter!("weir_epochs_total", "pipeline" => p.clone()).increment(1);
    gauge!("weir_last_epoch", "pipeline" => p.clone()).set(report.epoch as f64);
    histogram!("weir_epoch_duration_seconds", "pipeline" => p.clone())
        .record(report.duration.as_secs_f64());
    for (source, rows) in &report.rows_in {
        counter!("weir_source_records_total", "pipeline" => p.clone(), "source" => source.clone())
            .increment(*rows);
    }
    for (source, dead) in &report.dead_letters {
        counter!("weir_source_dead_letters_total", "pipeline" => p.clone(), "source" => source.clone())
            .increment(*dead);
    }
    for (table, rows) in &report.rows_out {
        counter!("weir_table_rows_total", "pipeline" => p.clone(), "table" => table.clone())
            .increment(*rows);
    }
    for (table, ms) in &report.commit_ms {
        histogram!("weir_commit_duration_seconds", "pipeline" => p.clone(), "table" => table.clone())
            .record(*ms as f64 / 1000.0);
    }
    record_operators(&p, report);
    record_watermark(&p, report);
    record_lag(&p, report);
}

/// Rows in and out, late rows and state per stateful operator (named by its table).
fn record_operators(p: &str, report: &EpochReport) {
    for (operator, m) in &report.operators {
        let labels = [("pipeline", p.to_string()), ("operator", operator.clone())];
        counter!("weir_operator_rows_in_total", &labels).increment(m.rows_in);
        counter!("weir_operator_rows_out_total", &labels).increment(m.rows_out);
        counter!("weir_operator_late_rows_total", &labels).increment(m.late_rows);
        gauge!("weir_operator_state_rows", &labels).set(m.state_rows as f64);
        gauge!("weir_operator_state_bytes", &labels).set(m.state_bytes as f64);
    }
}

/// The watermark, and how far it is behind the wall clock and the largest event time.
fn record_watermark(p: &str, report: &EpochReport) {
    let Some(wm) = report.watermark_ms.filter(|wm| *wm != i64::MAX) else {
        return;
    };
    let p = p.to_string();
    gauge!("weir_watermark_seconds", "pipeline" => p.clone()).set(wm as f64 / 1000.0);
    if let Some(delay) = report.watermark_delay_s() {
        gauge!("weir_watermark_delay_seconds", "pipeline" => p.clone()).set(delay);
    }
    if let Some(behind) = report.watermark_behind_events_s() {
        gauge!("weir_watermark_behind_max_event_time_seconds", "pipeline" => p).set(behind);
    }
}

/// Kafka consumer lag per partition (records not yet committed).
fn record_lag(p: &str, report: &EpochReport) {
    for (source, partitions) in &report.lag {
        for lag in partitions {
            gauge!(
                "weir_kafka_lag_records",
                "pipeline" => p.to_string(),
                "source" => source.clone(),
                "topic" => lag.topic.clone(),
                "partition" => lag.partition.to_string()
            )
            .set(lag.lag() as f64);
        }
    }
}

/// Describes every metric once (its help text and unit in `/metrics`).
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("weir_epochs_total", "Epochs committed.");
    describe_gauge!("weir_last_epoch", "The last epoch committed.");
    describe_histogram!(
        "weir_epoch_duration_seconds",
        Unit::Seconds,
        "Wall time of an epoch, read to commit."
    );
    describe_counter!("weir_source_records_total", "Records read from a source.");
    describe_counter!(
        "weir_source_dead_letters_total",
        "Records of a source dead-lettered (undecodable, late, or failing a query)."
    );
    describe_counter!("weir_table_rows_total", "Rows written to a table.");
    describe_histogram!(
        "weir_commit_duration_seconds",
        Unit::Seconds,
        "Wall time of one table's commit of an epoch."
    );
    describe_counter!(
        "weir_operator_rows_in_total",
        "Rows into a stateful operator."
    );
    describe_counter!(
        "weir_operator_rows_out_total",
        "Rows a stateful operator emitted."
    );
    describe_counter!(
        "weir_operator_late_rows_total",
        "Rows a stateful operator found late."
    );
    describe_gauge!(
        "weir_operator_state_rows",
        "Rows of state an operator holds."
    );
    describe_gauge!(
        "weir_operator_state_bytes",
        Unit::Bytes,
        "Bytes of state an operator holds in memory."
    );
    describe_gauge!(
        "weir_watermark_seconds",
        Unit::Seconds,
        "The watermark of the last epoch (Unix seconds)."
    );
    describe_gauge!(
        "weir_watermark_delay_seconds",
        Unit::Seconds,
        "How far the watermark is behind the wall clock."
    );
    describe_gauge!(
        "weir_watermark_behind_max_event_time_seconds",
        Unit::Seconds,
        "How far the watermark is behind the largest event time read."
    );
    describe_gauge!(
        "weir_kafka_lag_records",
        "Records of a Kafka partition not yet committed by the pipeline."
    );
}
