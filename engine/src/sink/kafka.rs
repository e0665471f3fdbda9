//! A table written to a Kafka topic: each epoch's rows as JSON messages, keyed by a column.
//!
//! Delivery is at-least-once: the producer is idempotent (no duplicates from its own retries),
//! but an epoch replayed after a crash between the send and Weir's commit log is sent again.
//! Every message carries the epoch in `_epoch`, and with a stable `key` a consumer can drop the
//! repeats (same key and epoch).

use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::error::{BoxError, EngineError};
use crate::options::Options;
use crate::sink::{
    column_named, PlannedSink, Sink, SinkConnector, SinkPlace, SinkReport, SinkTarget,
};

/// How long to wait for the broker to acknowledge an epoch's messages.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes a node's rows to a Kafka topic.
pub struct KafkaSink {
    topic: String,
    key: Option<String>,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink for `topic` on `servers`; `key` names the column used as message key;
    /// `properties` are extra librdkafka producer settings (`security.protocol`, ...).
    pub fn new(
        topic: &str,
        servers: &str,
        key: Option<String>,
        properties: &[(String, String)],
    ) -> Result<Self, BoxError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", servers)
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        for (k, v) in properties {
            config.set(k, v);
        }
        let producer: FutureProducer = config.create()?;
        Ok(KafkaSink {
            topic: topic.to_string(),
            key,
            producer,
        })
    }
}

/// `batch` with an `_epoch` column, as newline-separated JSON objects.
fn json_lines(batch: &RecordBatch, epoch: u64) -> Result<Vec<String>, BoxError> {
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(Field::new(
        "_epoch",
        DataType::Int64,
        false,
    )));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(Int64Array::from_iter_values(
        std::iter::repeat_n(epoch as i64, batch.num_rows()),
    )));
    let with_epoch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?;
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(&with_epoch)?;
        writer.finish()?;
    }
    Ok(String::from_utf8(out)?
        .lines()
        .map(str::to_string)
        .collect())
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        let mut rows = 0u64;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let lines = json_lines(batch, epoch)?;
            let keys = match &self.key {
                Some(k) => Some(cast(
                    batch.column(batch.schema().index_of(k)?),
                    &DataType::Utf8,
                )?),
                None => None,
            };
            let keys = keys
                .as_ref()
                .and_then(|k| k.as_any().downcast_ref::<arrow::array::StringArray>());
            let mut deliveries = Vec::with_capacity(lines.len());
            for (i, line) in lines.iter().enumerate() {
                let mut record = FutureRecord::<str, str>::to(&self.topic).payload(line);
                if let Some(k) = keys.filter(|k| !k.is_null(i)) {
                    record = record.key(k.value(i));
                }
                deliveries.push(self.producer.send(record, DELIVERY_TIMEOUT));
                rows += 1;
            }
            // Wait per batch so the producer queue stays bounded.
            for delivery in deliveries {
                delivery.await.map_err(|(e, _)| Box::new(e) as BoxError)?;
            }
        }
        self.producer.flush(DELIVERY_TIMEOUT)?;
        Ok(SinkReport {
            rows_inserted: None,
            rows_written: rows,
            already_committed: false,
            version: None,
        })
    }
}

/// The `kafka` sink connector: `topic`, `bootstrap.servers`, `format = 'json'`, `key` (a
/// column) and `kafka.*` producer properties. Messages are appended: no update output mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaSinkConnector;

/// A table planned to write to a Kafka topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedKafkaSink {
    /// The topic.
    pub topic: String,
    /// The brokers (`bootstrap.servers`).
    pub servers: String,
    /// The column whose value is each message's key, as the table spells it.
    pub key: Option<String>,
    /// `kafka.*` producer properties, without the prefix.
    pub properties: Vec<(String, String)>,
}

impl SinkConnector for KafkaSinkConnector {
    fn plan(
        &self,
        target: SinkTarget<'_>,
        options: &mut Options,
    ) -> crate::error::Result<std::sync::Arc<dyn PlannedSink>> {
        if target.update_keys.is_some() {
            return Err(EngineError::option_hint(
                "output_mode",
                "a kafka table appends messages and cannot replace rows",
                "'update' needs a table that MERGEs (connector = 'delta')",
            ));
        }
        let topic = options.require_str("topic", "the topic to write, e.g. topic = 'alerts'")?;
        let servers = options.require_str(
            "bootstrap.servers",
            "the brokers, e.g. bootstrap.servers = '127.0.0.1:9092'",
        )?;
        options.take_choice("format", &["json"])?;
        let key = match options.take_str("key") {
            None => None,
            Some(k) => Some(column_named(target.schema, &k).ok_or_else(|| {
                EngineError::option(
                    "key",
                    format!("`{k}` is not a column of `{}`", target.table),
                )
            })?),
        };
        let properties = options.take_prefixed("kafka.");
        Ok(std::sync::Arc::new(PlannedKafkaSink {
            topic,
            servers,
            key,
            properties,
        }))
    }
}

#[async_trait::async_trait]
impl PlannedSink for PlannedKafkaSink {
    fn describe(&self) -> String {
        match &self.key {
            Some(key) => format!("kafka topic '{}' keyed by {key}", self.topic),
            None => format!("kafka topic '{}'", self.topic),
        }
    }

    async fn open(&self, _place: SinkPlace<'_>) -> Result<Box<dyn Sink>, BoxError> {
        let sink = KafkaSink::new(
            &self.topic,
            &self.servers,
            self.key.clone(),
            &self.properties,
        )
        .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
        Ok(Box::new(sink))
    }
}
