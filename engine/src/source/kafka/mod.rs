//! The `kafka` connector: JSON records from one or more topics, read in exact offset ranges.
//!
//! Weir's offset log is the source of truth: each epoch's range is, per topic-partition, the
//! offsets `[from, until)`, planned from the partition's end offset and logged before any of
//! the epoch is committed; a replayed epoch reads exactly the same records. The consumer never
//! auto-commits; after an epoch is committed Weir commits its end offsets to the consumer group
//! so the usual lag tools see progress. Partitions added to a topic are picked up when planning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::options::Options;
use crate::source::raw::RawBatch;
use crate::source::{parse_range, Source};

mod metadata;
mod read;

use metadata::{limit_ranges, start_offset};
use read::StashedRecord;

/// How long one metadata or offset request may wait for the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Weir waits for unreachable brokers before it fails (option `broker_timeout`).
const DEFAULT_BROKER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest pause between two attempts to reach the brokers.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a read that makes no progress says what it is waiting for.
const REPORT_EVERY: Duration = Duration::from_secs(10);

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

/// A topic-partition's backlog: how far Weir has committed and where the partition ends.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
    /// The next offset Weir will read (the end of the last committed range).
    pub next: i64,
    /// One past the partition's latest offset on the broker.
    pub end: i64,
}

impl PartitionLag {
    /// Records in the partition that Weir has not committed yet.
    #[must_use]
    pub fn lag(&self) -> i64 {
        (self.end - self.next).max(0)
    }
}

/// The consumer's callbacks: librdkafka's client-wide errors (a broker connection refused, all
/// brokers down) are conditions Weir waits out and reports itself, so they are logged as
/// warnings naming the source rather than as errors.
struct SourceContext {
    source: String,
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(source = %self.source, "Kafka client: {error}: {reason}");
    }
}

impl ConsumerContext for SourceContext {}

/// Why reading topic metadata or offsets failed.
enum FetchError {
    /// The brokers did not answer (down, restarting, unreachable): worth retrying.
    Unreachable(String, rdkafka::error::KafkaError),
    /// An answer that retrying cannot change (a topic that does not exist).
    Fatal(EngineError),
}

/// Reads JSON records from Kafka topics.
pub struct KafkaSource {
    name: String,
    topics: Vec<String>,
    /// `bootstrap.servers`, for messages.
    servers: String,
    /// How long to keep retrying unreachable brokers before failing the run.
    broker_timeout: Duration,
    consumer: BaseConsumer<SourceContext>,
    starting: StartingOffsets,
    max_records_per_trigger: Option<u64>,
    /// `on_offset_out_of_range = 'earliest'`: skip to the earliest offset when retention
    /// deleted the next one, instead of failing.
    out_of_range_to_earliest: bool,
    /// Next offset to read per (topic, partition).
    next: BTreeMap<TopicPartition, i64>,
    /// Each partition's end (one past its latest offset) as of the last plan: the backlog
    /// the run reports without asking the brokers again.
    ends: BTreeMap<TopicPartition, i64>,
    /// With `--once`: the end offsets as of the first plan; later plans stop there.
    once_end: Option<BTreeMap<TopicPartition, i64>>,
    /// Whether this source has planned (or restored) before: `starting_offsets` applies to the
    /// partitions of a first plan only; partitions that appear later are read from their start.
    planned_before: bool,
    /// The partitions the consumer is assigned, each with the end of the last range read from
    /// it. A range that starts at those ends continues the fetch instead of re-assigning,
    /// which would drop what librdkafka already fetched ahead and fetch it again.
    read_end: BTreeMap<TopicPartition, i64>,
    /// Records polled past the end of a range (librdkafka fetches ahead), for the next range.
    stash: BTreeMap<TopicPartition, Vec<StashedRecord>>,
    /// Whether fetching of the assigned partitions is paused because the source had caught
    /// up: an idle pipeline then sends no fetch requests (librdkafka would otherwise poll the
    /// brokers continuously), and a topic deleted while idle is found by the next plan's
    /// metadata check instead of inside librdkafka's fetcher.
    paused: bool,
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
    /// `starting_offsets`, `max_records_per_trigger`, `group.id` (default
    /// `weir-<pipeline>-<source>`, so two pipelines reading one topic show separate lag),
    /// `on_offset_out_of_range`, `broker_timeout`, and any `kafka.*` client property (passed to
    /// librdkafka without the prefix).
    pub fn from_options(pipeline: &str, name: &str, options: &mut Options) -> Result<Self> {
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
        let broker_timeout = options
            .take_duration("broker_timeout")?
            .unwrap_or(DEFAULT_BROKER_TIMEOUT);
        let out_of_range_to_earliest = options
            .take_choice("on_offset_out_of_range", &["fail", "earliest"])?
            .is_some_and(|v| v == "earliest");
        let group = options
            .take_str("group.id")
            .unwrap_or_else(|| format!("weir-{pipeline}-{name}"));
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
        let context = SourceContext {
            source: name.to_string(),
        };
        let consumer: BaseConsumer<SourceContext> =
            config
                .create_with_context(context)
                .map_err(|e| EngineError::Source {
                    source_name: name.to_string(),
                    message: format!("cannot create a Kafka consumer for {servers}"),
                    cause: Some(std::io::Error::other(e)),
                })?;
        Ok(KafkaSource {
            name: name.to_string(),
            topics,
            servers,
            broker_timeout,
            consumer,
            starting,
            max_records_per_trigger,
            out_of_range_to_earliest,
            next: BTreeMap::new(),
            ends: BTreeMap::new(),
            once_end: None,
            planned_before: false,
            read_end: BTreeMap::new(),
            stash: BTreeMap::new(),
            paused: false,
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
    /// While the brokers are unreachable this retries with a growing pause, saying what it
    /// waits for, up to `broker_timeout`; a topic that does not exist fails at once.
    /// The partitions the consumer is assigned (those of the last ranges read).
    fn assigned_partitions(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in self.read_end.keys() {
            list.add_partition(topic, *partition);
        }
        list
    }

    /// Stops fetching the assigned partitions until the next read (see `paused`). A failure
    /// only costs idle fetch requests, so it is logged, not fatal.
    fn pause_fetching(&mut self) {
        if self.paused || self.read_end.is_empty() {
            return;
        }
        match self.consumer.pause(&self.assigned_partitions()) {
            Ok(()) => self.paused = true,
            Err(e) => tracing::warn!(source = %self.name, error = %e, "cannot pause fetching"),
        }
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
        self.planned_before |= !history.is_empty();
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
        // Each partition's readable range: from the next offset to its end (or to the end as
        // of the first plan, with --once).
        let mut ranges = Vec::new();
        let starting = if self.planned_before {
            StartingOffsets::Earliest
        } else {
            self.starting
        };
        self.planned_before = true;
        self.ends = partitions
            .iter()
            .map(|(tp, (_, high))| (tp.clone(), *high))
            .collect();
        for ((topic, partition), (low, high)) in partitions {
            let key = (topic.clone(), partition);
            let from = start_offset(
                self.next.get(&key).copied(),
                (low, high),
                starting,
                self.out_of_range_to_earliest,
            )
            .map_err(|problem| self.error(format!("{topic}/{partition}: {problem}"), None))?;
            // Later plans continue from here (with 'latest', from the end as of this plan).
            self.next.entry(key.clone()).or_insert(from);
            let mut until = high;
            if let Some(end) = self.once_end.as_ref().and_then(|e| e.get(&key)) {
                until = until.min(*end);
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
        if let Some(cap) = self.max_records_per_trigger {
            limit_ranges(&mut ranges, cap);
        }
        if ranges.is_empty() {
            self.pause_fetching();
            return Ok(None);
        }
        Ok(Some(serde_json::json!(KafkaRange { partitions: ranges })))
    }

    fn read(&mut self, range: &Value) -> Result<RawBatch> {
        self.read_range(range)
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

    fn lag(&mut self, history: &[Value]) -> Result<Option<Vec<PartitionLag>>> {
        self.partition_lag(history).map(Some)
    }

    fn backlog(&self) -> Option<Vec<PartitionLag>> {
        Some(
            self.ends
                .iter()
                .map(|((topic, partition), end)| PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    next: self
                        .next
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or(*end),
                    end: *end,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: i32, from: i64, until: i64) -> PartitionRange {
        PartitionRange {
            topic: "t".into(),
            partition,
            from,
            until,
        }
    }

    #[test]
    fn start_offset_resumes_or_explains_lost_offsets() {
        use StartingOffsets::{Earliest, Latest};
        // First run: the starting_offsets option.
        assert_eq!(start_offset(None, (5, 50), Earliest, false), Ok(5));
        assert_eq!(start_offset(None, (5, 50), Latest, false), Ok(50));
        // Resume where the checkpoint says, including at the very end.
        assert_eq!(start_offset(Some(20), (5, 50), Earliest, false), Ok(20));
        assert_eq!(start_offset(Some(50), (5, 50), Latest, false), Ok(50));
        // Retention deleted offsets 20..30: an error naming both, or skip ahead when asked.
        let err = start_offset(Some(20), (30, 50), Earliest, false).unwrap_err();
        assert!(
            err.contains("offset 20") && err.contains("earliest is 30"),
            "{err}"
        );
        assert!(err.contains("on_offset_out_of_range = 'earliest'"), "{err}");
        assert_eq!(start_offset(Some(20), (30, 50), Earliest, true), Ok(30));
        // The topic was recreated: it ends before what Weir already read.
        let err = start_offset(Some(900), (0, 40), Earliest, false).unwrap_err();
        assert!(err.contains("deleted and created again"), "{err}");
        assert_eq!(start_offset(Some(900), (0, 40), Earliest, true), Ok(0));
    }

    #[test]
    fn cap_is_shared_in_proportion_to_backlog() {
        // A skewed topic: 1000, 10 and 0 records waiting.
        let mut ranges = vec![range(0, 0, 1000), range(1, 5, 15)];
        limit_ranges(&mut ranges, 101);
        let taken: Vec<i64> = ranges.iter().map(|r| r.until - r.from).collect();
        assert_eq!(taken.iter().sum::<i64>(), 101);
        assert_eq!(taken, vec![100, 1]);

        // Under the cap nothing changes.
        let mut ranges = vec![range(0, 0, 10), range(1, 0, 10)];
        limit_ranges(&mut ranges, 50);
        assert_eq!(ranges, vec![range(0, 0, 10), range(1, 0, 10)]);

        // A cap smaller than the number of partitions still reads `cap` records.
        let mut ranges = vec![range(0, 0, 10), range(1, 0, 10), range(2, 0, 10)];
        limit_ranges(&mut ranges, 2);
        assert_eq!(ranges.iter().map(|r| r.until - r.from).sum::<i64>(), 2);
    }
}
