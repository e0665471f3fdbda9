//! The `kafka` connector: JSON records from one or more topics, read in exact offset ranges.
//!
//! Weir's offset log is the source of truth: each epoch's range is, per topic-partition, the
//! offsets `[from, until)`, planned from the partition's end offset and logged before any of
//! the epoch is committed; a replayed epoch reads exactly the same records. The consumer never
//! auto-commits; after an epoch is committed Weir commits its end offsets to the consumer group
//! so the usual lag tools see progress. Partitions added to a topic are picked up when planning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::options::Options;
use crate::raw::RawBatch;
use crate::source::{parse_range, Source};

/// How long a metadata or offset request may wait for the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading one epoch's range may take before Weir reports what it is waiting for.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// One topic-partition's share of an epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PartitionRange {
    topic: String,
    partition: i32,
    /// First offset to read.
    from: i64,
    /// One past the last offset to read.
    until: i64,
}

/// The offsets one epoch reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct KafkaRange {
    partitions: Vec<PartitionRange>,
}

/// A topic and partition number.
type TopicPartition = (String, i32);

/// A partition's low and high watermarks (earliest offset, one past the latest).
type Watermarks = (i64, i64);

/// Where a new partition starts on the first run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StartingOffsets {
    Earliest,
    Latest,
}

/// Reads JSON records from Kafka topics.
pub struct KafkaSource {
    name: String,
    topics: Vec<String>,
    consumer: BaseConsumer,
    starting: StartingOffsets,
    max_records_per_trigger: Option<u64>,
    /// `on_offset_out_of_range = 'earliest'`: skip to the earliest offset when retention
    /// deleted the next one, instead of failing.
    out_of_range_to_earliest: bool,
    /// Next offset to read per (topic, partition).
    next: BTreeMap<TopicPartition, i64>,
    /// With `--once`: the end offsets as of the first plan; later plans stop there.
    once_end: Option<BTreeMap<TopicPartition, i64>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Reads the options: `topic` (comma list), `bootstrap.servers`, `format` (json),
    /// `starting_offsets`, `max_records_per_trigger`, `group.id`, `on_offset_out_of_range`, and
    /// any `kafka.*` client property (passed to librdkafka without the prefix).
    pub fn from_options(name: &str, options: &mut Options) -> Result<Self> {
        let topics: Vec<String> = options
            .require_str("topic", "the topic(s) to read, e.g. topic = 'orders'")?
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(EngineError::option("topic", "names no topic"));
        }
        let servers = options.require_str(
            "bootstrap.servers",
            "the brokers, e.g. 'bootstrap.servers' = '127.0.0.1:9092'",
        )?;
        options.take_choice("format", &["json"])?;
        let starting = match options
            .take_choice("starting_offsets", &["earliest", "latest"])?
            .as_deref()
        {
            Some("latest") => StartingOffsets::Latest,
            _ => StartingOffsets::Earliest,
        };
        let max_records_per_trigger = options.take_u64("max_records_per_trigger")?;
        let out_of_range_to_earliest = options
            .take_choice("on_offset_out_of_range", &["fail", "earliest"])?
            .is_some_and(|v| v == "earliest");
        let group = options
            .take_str("group.id")
            .unwrap_or_else(|| format!("weir-{name}"));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &servers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A range is read to a known end: don't let the broker hold each fetch for more
            // data (librdkafka's 500 ms default made every partition of every epoch wait).
            .set("fetch.wait.max.ms", "10");
        for (key, value) in options.take_prefixed("kafka.") {
            config.set(key, value);
        }
        let consumer: BaseConsumer = config.create().map_err(|e| EngineError::Source {
            source_name: name.to_string(),
            message: format!("cannot create a Kafka consumer for {servers}"),
            cause: Some(std::io::Error::other(e)),
        })?;
        Ok(KafkaSource {
            name: name.to_string(),
            topics,
            consumer,
            starting,
            max_records_per_trigger,
            out_of_range_to_earliest,
            next: BTreeMap::new(),
            once_end: None,
        })
    }

    fn error(&self, message: String, cause: Option<rdkafka::error::KafkaError>) -> EngineError {
        EngineError::Source {
            source_name: self.name.clone(),
            message,
            cause: cause.map(std::io::Error::other),
        }
    }

    /// Every (topic, partition) of the source's topics, with its low and high watermarks.
    fn partitions(&self) -> Result<Vec<(TopicPartition, Watermarks)>> {
        let mut out = Vec::new();
        for topic in &self.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| {
                    self.error(
                        format!("cannot read the metadata of topic `{topic}` (is the broker up?)"),
                        Some(e),
                    )
                })?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(self.error(format!("topic `{topic}` does not exist"), None));
            };
            if t.partitions().is_empty() {
                return Err(self.error(
                    format!("topic `{topic}` does not exist or has no partitions; create it first"),
                    None,
                ));
            }
            for p in t.partitions() {
                let marks = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| {
                        self.error(
                            format!("cannot read the offsets of {topic}/{}", p.id()),
                            Some(e),
                        )
                    })?;
                out.push(((topic.clone(), p.id()), marks));
            }
        }
        Ok(out)
    }
}

impl Source for KafkaSource {
    fn metadata_fields(&self) -> Vec<FieldRef> {
        vec![
            Arc::new(Field::new("_topic", DataType::Utf8, false)),
            Arc::new(Field::new("_partition", DataType::Int32, false)),
            Arc::new(Field::new("_offset", DataType::Int64, false)),
            Arc::new(Field::new("_key", DataType::Utf8, true)),
            Arc::new(Field::new(
                "_kafka_timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            )),
        ]
    }

    fn restore(&mut self, history: &[Value]) -> Result<()> {
        for entry in history {
            let r: KafkaRange = parse_range(&self.name, entry)?;
            for p in r.partitions {
                let next = self.next.entry((p.topic, p.partition)).or_insert(p.until);
                *next = (*next).max(p.until);
            }
        }
        Ok(())
    }

    fn plan_next(&mut self, available_now: bool) -> Result<Option<Value>> {
        let partitions = self.partitions()?;
        if available_now && self.once_end.is_none() {
            self.once_end = Some(
                partitions
                    .iter()
                    .map(|(tp, (_, high))| (tp.clone(), *high))
                    .collect(),
            );
        }
        let per_partition = self
            .max_records_per_trigger
            .map(|m| (m / partitions.len().max(1) as u64).max(1) as i64);
        let mut ranges = Vec::new();
        for ((topic, partition), (low, high)) in partitions {
            let key = (topic.clone(), partition);
            let mut from = match self.next.get(&key) {
                Some(next) => *next,
                None => match self.starting {
                    StartingOffsets::Earliest => low,
                    StartingOffsets::Latest => high,
                },
            };
            if from < low {
                if !self.out_of_range_to_earliest {
                    return Err(self.error(
                        format!(
                            "{topic}/{partition}: offset {from} is no longer in the topic (the \
                             earliest is {low}; retention deleted the rest). Set \
                             on_offset_out_of_range = 'earliest' to skip ahead, or reset the \
                             checkpoint"
                        ),
                        None,
                    ));
                }
                from = low;
            }
            let mut until = high;
            if let Some(end) = self.once_end.as_ref().and_then(|e| e.get(&key)) {
                until = until.min(*end);
            }
            if let Some(cap) = per_partition {
                until = until.min(from.saturating_add(cap));
            }
            if until > from {
                ranges.push(PartitionRange {
                    topic,
                    partition,
                    from,
                    until,
                });
            }
        }
        if ranges.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::json!(KafkaRange { partitions: ranges })))
    }

    fn read(&mut self, range: &Value) -> Result<RawBatch> {
        let r: KafkaRange = parse_range(&self.name, range)?;
        let mut raw = RawBatch::default();
        let (mut topics, mut partitions, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let (mut keys, mut timestamps) = (Vec::new(), Vec::new());
        for p in &r.partitions {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.from))
                .map_err(|e| {
                    self.error(
                        format!("cannot assign {}/{}", p.topic, p.partition),
                        Some(e),
                    )
                })?;
            self.consumer.assign(&assignment).map_err(|e| {
                self.error(
                    format!("cannot assign {}/{}", p.topic, p.partition),
                    Some(e),
                )
            })?;
            let started = Instant::now();
            let mut last_report = Instant::now();
            let mut position = p.from;
            while position < p.until {
                match self.consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        position = m.offset() + 1;
                        if m.offset() < p.from || m.offset() >= p.until {
                            continue;
                        }
                        raw.push(m.payload().unwrap_or_default());
                        topics.push(p.topic.clone());
                        partitions.push(p.partition);
                        offsets.push(m.offset());
                        keys.push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
                        timestamps.push(m.timestamp().to_millis());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(source = %self.name, topic = %p.topic, partition = p.partition, error = %e, "Kafka read error; retrying");
                    }
                    None => {
                        // Offsets can have gaps (transaction markers, compaction): the broker's
                        // position tells when the range is done.
                        if let Ok(pos) = self.consumer.position() {
                            if let Some(Offset::Offset(o)) = pos
                                .find_partition(&p.topic, p.partition)
                                .map(|e| e.offset())
                            {
                                position = position.max(o);
                            }
                        }
                    }
                }
                if last_report.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(
                        source = %self.name,
                        "waiting for {}/{} offsets {position}..{} from the broker",
                        p.topic, p.partition, p.until
                    );
                    last_report = Instant::now();
                }
                if started.elapsed() > READ_TIMEOUT {
                    return Err(self.error(
                        format!(
                            "{}/{}: offsets {position}..{} did not arrive within {}s; is the \
                             broker reachable? Weir resumes from this epoch when restarted",
                            p.topic,
                            p.partition,
                            p.until,
                            READ_TIMEOUT.as_secs()
                        ),
                        None,
                    ));
                }
            }
        }
        let fields = self.metadata_fields();
        raw.metadata.push((
            fields[0].clone(),
            Arc::new(StringArray::from_iter_values(topics)),
        ));
        raw.metadata
            .push((fields[1].clone(), Arc::new(Int32Array::from(partitions))));
        raw.metadata
            .push((fields[2].clone(), Arc::new(Int64Array::from(offsets))));
        raw.metadata
            .push((fields[3].clone(), Arc::new(StringArray::from(keys))));
        raw.metadata.push((
            fields[4].clone(),
            Arc::new(TimestampMillisecondArray::from(timestamps).with_timezone("UTC")),
        ));
        Ok(raw)
    }

    fn advance(&mut self, range: &Value) -> Result<()> {
        let r: KafkaRange = parse_range(&self.name, range)?;
        for p in r.partitions {
            self.next.insert((p.topic, p.partition), p.until);
        }
        Ok(())
    }

    fn committed(&mut self, range: &Value) -> Result<()> {
        let r: KafkaRange = parse_range(&self.name, range)?;
        let mut offsets = TopicPartitionList::new();
        for p in &r.partitions {
            offsets
                .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.until))
                .map_err(|e| self.error("cannot build the offset commit".into(), Some(e)))?;
        }
        // Only for lag tools: Weir's own checkpoint is the source of truth, so a failed
        // commit is logged, not fatal.
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(source = %self.name, error = %e, "cannot commit offsets to the consumer group");
        }
        Ok(())
    }

    fn describe_position(&self) -> String {
        let total: i64 = self.next.values().sum();
        format!("{} partitions, next offsets sum {total}", self.next.len())
    }
}
