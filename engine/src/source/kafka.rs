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
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::options::Options;
use crate::source::raw::RawBatch;
use crate::source::{parse_range, Source};

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
#[derive(Debug, Clone, PartialEq)]
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
    pub fn lag(&self) -> i64 {
        (self.end - self.next).max(0)
    }
}

/// What one partition of an epoch's range has delivered so far.
#[derive(Default)]
struct PartitionRead {
    /// The next offset expected (one past the last seen, or the consumer's position).
    position: i64,
    records: RawBatch,
    offsets: Vec<i64>,
    keys: Vec<Option<String>>,
    timestamps: Vec<Option<i64>>,
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

/// A record polled past the end of its partition's range, kept for the next range.
struct StashedRecord {
    offset: i64,
    payload: Vec<u8>,
    key: Option<String>,
    timestamp: Option<i64>,
}

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

    fn partitions(&self) -> Result<Vec<(TopicPartition, Watermarks)>> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.try_partitions() {
                Ok(partitions) => {
                    if attempt > 1 {
                        tracing::info!(
                            source = %self.name,
                            "Kafka brokers {} answer again after {:.0}s; resuming",
                            self.servers,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(partitions);
                }
                Err(FetchError::Fatal(e)) => return Err(e),
                Err(FetchError::Unreachable(what, e)) => {
                    if started.elapsed() + backoff > self.broker_timeout {
                        return Err(self.error(
                            format!(
                                "Kafka brokers {} did not answer for {}s while reading {what}; \
                                 check that they are up and reachable (or raise \
                                 broker_timeout). Weir resumes from its checkpoint when \
                                 restarted",
                                self.servers,
                                started.elapsed().as_secs()
                            ),
                            Some(e),
                        ));
                    }
                    tracing::warn!(
                        source = %self.name,
                        error = %e,
                        "Kafka brokers {} unreachable: waiting to read {what} (attempt \
                         {attempt}, next in {:.1}s, giving up after broker_timeout = {}s)",
                        self.servers,
                        backoff.as_secs_f64(),
                        self.broker_timeout.as_secs()
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt at [`Self::partitions`].
    fn try_partitions(&self) -> std::result::Result<Vec<(TopicPartition, Watermarks)>, FetchError> {
        let mut out = Vec::new();
        for topic in &self.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| {
                    FetchError::Unreachable(format!("the metadata of topic `{topic}`"), e)
                })?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(FetchError::Fatal(self.error(
                    format!("topic `{topic}` does not exist; create it first"),
                    None,
                )));
            };
            if t.partitions().is_empty() {
                return Err(FetchError::Fatal(self.error(
                    format!(
                        "topic `{topic}` does not exist or has no partitions (was it deleted?); \
                         create it first"
                    ),
                    None,
                )));
            }
            for p in t.partitions() {
                let marks = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| {
                        FetchError::Unreachable(format!("the offsets of {topic}/{}", p.id()), e)
                    })?;
                out.push(((topic.clone(), p.id()), marks));
            }
        }
        Ok(out)
    }

    /// Each partition's backlog after the committed `history` (the offset log, oldest first),
    /// read from the brokers: what `weir status` shows as consumer lag.
    fn partition_lag(&mut self, history: &[Value]) -> Result<Vec<PartitionLag>> {
        self.restore(history)?;
        let partitions = self.try_partitions().map_err(|e| match e {
            FetchError::Fatal(e) => e,
            FetchError::Unreachable(what, e) => self.error(
                format!(
                    "Kafka brokers {} did not answer reading {what}",
                    self.servers
                ),
                Some(e),
            ),
        })?;
        Ok(partitions
            .into_iter()
            .map(|((topic, partition), (low, high))| {
                let next = match self.next.get(&(topic.clone(), partition)) {
                    Some(next) => *next,
                    None if self.starting == StartingOffsets::Latest => high,
                    None => low,
                };
                PartitionLag {
                    topic,
                    partition,
                    next,
                    end: high,
                }
            })
            .collect())
    }
}

/// Where a partition's next range starts: after the last committed range (`next`), or for a
/// partition never read, at `starting` (`starting_offsets` on a source's first plan; the
/// earliest offset for partitions that appear later). An offset the partition no longer holds is an
/// error saying why and what to do, unless `to_earliest` (`on_offset_out_of_range =
/// 'earliest'`) restarts from the earliest offset left.
fn start_offset(
    next: Option<i64>,
    (low, high): Watermarks,
    starting: StartingOffsets,
    to_earliest: bool,
) -> std::result::Result<i64, String> {
    let Some(next) = next else {
        return Ok(match starting {
            StartingOffsets::Earliest => low,
            StartingOffsets::Latest => high,
        });
    };
    if next < low {
        if to_earliest {
            return Ok(low);
        }
        return Err(format!(
            "offset {next} is no longer in the topic (the earliest is {low}; retention deleted \
             the rest). Set on_offset_out_of_range = 'earliest' to skip ahead, or reset the \
             checkpoint"
        ));
    }
    if next > high {
        if to_earliest {
            return Ok(low);
        }
        return Err(format!(
            "Weir has read up to offset {next} but the partition now ends at {high}: the topic \
             was deleted and created again, or its data was lost. Set on_offset_out_of_range = \
             'earliest' to read it from its start, or reset the checkpoint"
        ));
    }
    Ok(next)
}

/// Shrinks `ranges` to `cap` records in all, shared in proportion to each partition's backlog
/// (as Spark's `maxOffsetsPerTrigger` does), so a skewed topic still reads `cap` records an
/// epoch and every partition with a backlog moves.
fn limit_ranges(ranges: &mut Vec<PartitionRange>, cap: u64) {
    let backlog: u64 = ranges.iter().map(|r| (r.until - r.from) as u64).sum();
    if backlog <= cap {
        return;
    }
    let mut left = cap;
    for r in ranges.iter_mut() {
        let share = ((r.until - r.from) as u128 * cap as u128 / backlog as u128) as u64;
        r.until = r.from + share as i64;
        left -= share;
    }
    // The rounding remainder (less than one record per partition), one record each; a share
    // is below its backlog, so each of these partitions has one more.
    for r in ranges.iter_mut() {
        if left == 0 {
            break;
        }
        r.until += 1;
        left -= 1;
    }
    ranges.retain(|r| r.until > r.from);
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
        let r: KafkaRange = parse_range(&self.name, range)?;
        // All partitions of the range are fetched at once (librdkafka fetches them in parallel),
        // each into its own buffer; the batch then lists them in the range's order, so a
        // replayed epoch yields the same rows in the same order.
        let continues = !self.read_end.is_empty()
            && r.partitions
                .iter()
                .all(|p| self.read_end.get(&(p.topic.clone(), p.partition)) == Some(&p.from));
        if !continues {
            let mut assignment = TopicPartitionList::new();
            for p in &r.partitions {
                assignment
                    .add_partition_offset(&p.topic, p.partition, Offset::Offset(p.from))
                    .map_err(|e| {
                        self.error(
                            format!("cannot assign {}/{}", p.topic, p.partition),
                            Some(e),
                        )
                    })?;
            }
            self.consumer
                .assign(&assignment)
                .map_err(|e| self.error("cannot assign the epoch's partitions".into(), Some(e)))?;
            self.read_end = r
                .partitions
                .iter()
                .map(|p| ((p.topic.clone(), p.partition), p.from))
                .collect();
            self.stash.clear();
            // A pause outlives an assignment in librdkafka: a partition paused while the
            // source had caught up, then left out of an assignment (an epoch with records in
            // other partitions only), is still paused when a later epoch assigns it again.
            // So every assignment is resumed, paused or not.
            self.consumer.resume(&assignment).map_err(|e| {
                self.error(
                    "cannot resume fetching the epoch's partitions".into(),
                    Some(e),
                )
            })?;
            self.paused = false;
        } else if self.paused {
            // Fetching restarts after the last record polled; what the stash holds is kept.
            self.consumer
                .resume(&self.assigned_partitions())
                .map_err(|e| {
                    self.error(
                        "cannot resume fetching the epoch's partitions".into(),
                        Some(e),
                    )
                })?;
            self.paused = false;
        }
        let mut reads: Vec<PartitionRead> = r
            .partitions
            .iter()
            .map(|p| PartitionRead {
                position: p.from,
                ..PartitionRead::default()
            })
            .collect();
        // First what the previous read fetched ahead.
        for (p, read) in r.partitions.iter().zip(reads.iter_mut()) {
            let Some(stashed) = self.stash.remove(&(p.topic.clone(), p.partition)) else {
                continue;
            };
            let mut later = Vec::new();
            for record in stashed {
                if record.offset >= p.until {
                    later.push(record);
                } else if record.offset >= p.from {
                    read.position = read.position.max(record.offset + 1);
                    read.records.push(&record.payload);
                    read.offsets.push(record.offset);
                    read.keys.push(record.key);
                    read.timestamps.push(record.timestamp);
                }
            }
            if let Some(first) = later.first() {
                // Everything before a later record has been seen.
                read.position = read.position.max(first.offset);
                self.stash.insert((p.topic.clone(), p.partition), later);
            }
        }
        let index: BTreeMap<(&str, i32), usize> = r
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.topic.as_str(), p.partition), i))
            .collect();
        let done = |reads: &[PartitionRead]| {
            reads
                .iter()
                .zip(&r.partitions)
                .all(|(read, p)| read.position >= p.until)
        };
        // A range is planned from offsets the broker reported, so its records exist; while
        // they do not arrive (broker down or restarting, leader moving) Weir keeps polling
        // (librdkafka reconnects with backoff) and says what it waits for, up to
        // broker_timeout without progress.
        let mut last_progress = Instant::now();
        let mut last_report = Instant::now();
        while !done(&reads) {
            match self.consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let found = index.get(&(m.topic(), m.partition())).copied();
                    let Some(i) = found.filter(|&i| m.offset() < r.partitions[i].until) else {
                        // Fetched ahead, or from an assigned partition with no range this
                        // epoch: kept for the next range, which starts where this one ends.
                        let tp = (m.topic().to_string(), m.partition());
                        if self.read_end.contains_key(&tp) {
                            self.stash.entry(tp).or_default().push(StashedRecord {
                                offset: m.offset(),
                                payload: m.payload().unwrap_or_default().to_vec(),
                                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                                timestamp: m.timestamp().to_millis(),
                            });
                        }
                        if let Some(i) = found {
                            reads[i].position = reads[i].position.max(m.offset() + 1);
                        }
                        continue;
                    };
                    let (p, read) = (&r.partitions[i], &mut reads[i]);
                    read.position = read.position.max(m.offset() + 1);
                    if m.offset() < p.from {
                        continue;
                    }
                    read.records.push(m.payload().unwrap_or_default());
                    read.offsets.push(m.offset());
                    read.keys
                        .push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
                    read.timestamps.push(m.timestamp().to_millis());
                }
                Some(Err(e)) => {
                    tracing::warn!(source = %self.name, error = %e, "Kafka read error; retrying");
                }
                None => {
                    // Offsets can have gaps (transaction markers, compaction): the consumer's
                    // position tells when a partition's range is done.
                    if let Ok(positions) = self.consumer.position() {
                        for (p, read) in r.partitions.iter().zip(reads.iter_mut()) {
                            if let Some(Offset::Offset(o)) = positions
                                .find_partition(&p.topic, p.partition)
                                .map(|e| e.offset())
                            {
                                read.position = read.position.max(o);
                            }
                        }
                    }
                }
            }
            if last_report.elapsed() > REPORT_EVERY || last_progress.elapsed() > self.broker_timeout
            {
                let waiting: Vec<String> = r
                    .partitions
                    .iter()
                    .zip(&reads)
                    .filter(|(p, read)| read.position < p.until)
                    .map(|(p, read)| {
                        format!(
                            "{}/{} offsets {}..{}",
                            p.topic, p.partition, read.position, p.until
                        )
                    })
                    .collect();
                if last_progress.elapsed() > self.broker_timeout {
                    return Err(self.error(
                        format!(
                            "{} did not arrive from Kafka brokers {} within broker_timeout = \
                             {}s; check that they are up and reachable. Weir resumes from this \
                             epoch when restarted",
                            waiting.join(", "),
                            self.servers,
                            self.broker_timeout.as_secs()
                        ),
                        None,
                    ));
                }
                tracing::warn!(
                    source = %self.name,
                    "waiting for {} from Kafka brokers {} (no record for {:.0}s; giving up \
                     after broker_timeout = {}s)",
                    waiting.join(", "),
                    self.servers,
                    last_progress.elapsed().as_secs_f64(),
                    self.broker_timeout.as_secs()
                );
                last_report = Instant::now();
            }
        }
        for p in &r.partitions {
            self.read_end
                .insert((p.topic.clone(), p.partition), p.until);
        }
        let mut raw = RawBatch::default();
        let (mut topics, mut partitions, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let (mut keys, mut timestamps) = (Vec::new(), Vec::new());
        for (p, read) in r.partitions.iter().zip(reads) {
            for i in 0..read.records.len() {
                raw.push(read.records.record(i));
            }
            let n = read.offsets.len();
            topics.extend(std::iter::repeat_n(p.topic.clone(), n));
            partitions.extend(std::iter::repeat_n(p.partition, n));
            offsets.extend(read.offsets);
            keys.extend(read.keys);
            timestamps.extend(read.timestamps);
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

    fn lag(&mut self, history: &[Value]) -> Result<Option<Vec<PartitionLag>>> {
        self.partition_lag(history).map(Some)
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
