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

/// What a message's key is.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKey {
    /// No key.
    None,
    /// One column's value, as text (`key = 'user_id'`).
    Column(String),
    /// The window and group keys of an update-mode table as a JSON object
    /// (`{"window_start":"...","product_id":"p1"}`): a compacted topic keeps the latest row of
    /// each.
    Columns(Vec<String>),
}

/// Writes a node's rows to a Kafka topic.
pub struct KafkaSink {
    topic: String,
    key: MessageKey,
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
    /// A sink for `topic` on `servers`; `key` says what each message's key is;
    /// `properties` are extra librdkafka producer settings (`security.protocol`, ...).
    pub fn new(
        topic: &str,
        servers: &str,
        key: MessageKey,
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

/// `batch` with an `_epoch` column, as one JSON object per row.
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
    json_rows(&with_epoch)
}

/// One JSON object per row of `batch`.
fn json_rows(batch: &RecordBatch) -> Result<Vec<String>, BoxError> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(String::from_utf8(out)?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Each row's message key (`None` for a row without one).
fn message_keys(batch: &RecordBatch, key: &MessageKey) -> Result<Vec<Option<String>>, BoxError> {
    match key {
        MessageKey::None => Ok(vec![None; batch.num_rows()]),
        MessageKey::Column(column) => {
            let values = cast(
                batch.column(batch.schema().index_of(column)?),
                &DataType::Utf8,
            )?;
            let values = values
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .ok_or("a key cast to text is not text")?;
            Ok(values.iter().map(|v| v.map(str::to_string)).collect())
        }
        MessageKey::Columns(columns) => {
            let indices: Vec<usize> = columns
                .iter()
                .map(|c| batch.schema().index_of(c))
                .collect::<Result<_, _>>()?;
            Ok(json_rows(&batch.project(&indices)?)?
                .into_iter()
                .map(Some)
                .collect())
        }
    }
}

impl KafkaSink {
    /// Sends one message per (key, payload) and waits for the broker to acknowledge them; a
    /// `None` payload is a tombstone (a compacted topic then forgets the key).
    async fn send_all(
        &self,
        messages: Vec<(Option<String>, Option<String>)>,
    ) -> Result<(), BoxError> {
        let mut deliveries = Vec::with_capacity(messages.len());
        for (key, payload) in &messages {
            let mut record = FutureRecord::<str, str>::to(&self.topic);
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            if let Some(key) = key {
                record = record.key(key);
            }
            deliveries.push(self.producer.send(record, DELIVERY_TIMEOUT));
        }
        for delivery in deliveries {
            delivery.await.map_err(|(e, _)| Box::new(e) as BoxError)?;
        }
        Ok(())
    }
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
        self.write_epoch_replacing(epoch, batches, Vec::new()).await
    }

    /// In update mode the rows of replaced sessions are sent first as tombstones (their key,
    /// no payload), so a compacted topic forgets them.
    async fn write_epoch_replacing(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        let replaced: Vec<&RecordBatch> = replaced.iter().filter(|b| b.num_rows() > 0).collect();
        if !replaced.is_empty() && !matches!(self.key, MessageKey::Columns(_)) {
            return Err(format!(
                "{} cannot delete the rows of replaced sessions without keys (output_mode = \
                 'update' keys messages by the window and group keys)",
                self.describe()
            )
            .into());
        }
        for batch in replaced {
            let keys = message_keys(batch, &self.key)?;
            self.send_all(keys.into_iter().map(|k| (k, None)).collect())
                .await?;
        }
        let mut rows = 0u64;
        // Sent and acknowledged per batch, so the producer queue stays bounded.
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let lines = json_lines(batch, epoch)?;
            let keys = message_keys(batch, &self.key)?;
            rows += lines.len() as u64;
            self.send_all(keys.into_iter().zip(lines.into_iter().map(Some)).collect())
                .await?;
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
/// column) and `kafka.*` producer properties. In update output mode each changed row is sent
/// keyed by its window and group keys (unless `key` names a column), so a compacted topic
/// holds the latest row per key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaSinkConnector;

/// A table planned to write to a Kafka topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedKafkaSink {
    /// The topic.
    pub topic: String,
    /// The brokers (`bootstrap.servers`).
    pub servers: String,
    /// What each message's key is.
    pub key: MessageKey,
    /// `kafka.*` producer properties, without the prefix.
    pub properties: Vec<(String, String)>,
}

impl SinkConnector for KafkaSinkConnector {
    fn plan(
        &self,
        target: SinkTarget<'_>,
        options: &mut Options,
    ) -> crate::error::Result<std::sync::Arc<dyn PlannedSink>> {
        let topic = options.require_str("topic", "the topic to write, e.g. topic = 'alerts'")?;
        let servers = options.require_str(
            "bootstrap.servers",
            "the brokers, e.g. bootstrap.servers = '127.0.0.1:9092'",
        )?;
        options.take_choice("format", &["json"])?;
        let key = match (options.take_str("key"), target.update_keys) {
            (Some(k), _) => {
                MessageKey::Column(column_named(target.schema, &k).ok_or_else(|| {
                    EngineError::option(
                        "key",
                        format!("`{k}` is not a column of `{}`", target.table),
                    )
                })?)
            }
            (None, Some(keys)) => MessageKey::Columns(keys.to_vec()),
            (None, None) => MessageKey::None,
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
            MessageKey::Column(key) => format!("kafka topic '{}' keyed by {key}", self.topic),
            MessageKey::Columns(keys) => format!(
                "kafka topic '{}' keyed by ({}), the latest row per key (update)",
                self.topic,
                keys.join(", ")
            ),
            MessageKey::None => format!("kafka topic '{}'", self.topic),
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
