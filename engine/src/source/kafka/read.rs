//! Reading one epoch's range: assign its partitions at their `from` offsets (or continue where
//! the last range ended), take what the last read fetched ahead, poll until every partition
//! reaches its `until` offset (waiting out brokers that are down, up to `broker_timeout`), and
//! return the records in the range's partition order, so a replay yields the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{KafkaRange, KafkaSource, TopicPartition, REPORT_EVERY};
use crate::error::Result;
use crate::source::raw::RawBatch;
use crate::source::{parse_range, Source};

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

/// A record polled past the end of its partition's range, kept for the next range.
pub(super) struct StashedRecord {
    offset: i64,
    payload: Vec<u8>,
    key: Option<String>,
    timestamp: Option<i64>,
}

impl KafkaSource {
    /// Reads exactly `range` (see the module's description).
    pub(super) fn read_range(&mut self, range: &Value) -> Result<RawBatch> {
        let r: KafkaRange = parse_range(&self.name, range)?;
        // All partitions of the range are fetched at once (librdkafka fetches them in
        // parallel), each into its own buffer; the batch then lists them in the range's order.
        self.assign_for(&r)?;
        let mut reads = self.reads_from_stash(&r);
        self.poll_until_done(&r, &mut reads)?;
        for p in &r.partitions {
            self.read_end
                .insert((p.topic.clone(), p.partition), p.until);
        }
        Ok(self.raw_batch(&r, reads))
    }

    /// Assigns the range's partitions at their `from` offsets, unless the range continues
    /// exactly where the last one ended (then fetching just resumes).
    fn assign_for(&mut self, r: &KafkaRange) -> Result<()> {
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
        Ok(())
    }

    /// One read per partition of the range, starting with what the last read fetched ahead.
    fn reads_from_stash(&mut self, r: &KafkaRange) -> Vec<PartitionRead> {
        let mut reads: Vec<PartitionRead> = r
            .partitions
            .iter()
            .map(|p| PartitionRead {
                position: p.from,
                ..PartitionRead::default()
            })
            .collect();
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
        reads
    }

    /// Polls until every partition of the range reached its `until` offset. A range is
    /// planned from offsets the broker reported, so its records exist; while they do not
    /// arrive (broker down or restarting, leader moving) Weir keeps polling (librdkafka
    /// reconnects with backoff) and says what it waits for, up to `broker_timeout` without
    /// progress.
    fn poll_until_done(&mut self, r: &KafkaRange, reads: &mut [PartitionRead]) -> Result<()> {
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
        let mut last_progress = Instant::now();
        let mut last_report = Instant::now();
        while !done(reads) {
            match self.consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let found = index.get(&(m.topic(), m.partition())).copied();
                    take_message(&mut self.stash, &self.read_end, r, reads, &m, found);
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
            if stalled(
                last_progress.elapsed(),
                last_report.elapsed(),
                self.broker_timeout,
            ) {
                self.report_waiting(r, reads, last_progress)?;
                last_report = Instant::now();
            }
        }
        Ok(())
    }

    /// Says which offsets the read still waits for; past `broker_timeout` without progress,
    /// the error that ends the run (the epoch is replayed on restart).
    fn report_waiting(
        &self,
        r: &KafkaRange,
        reads: &[PartitionRead],
        last_progress: Instant,
    ) -> Result<()> {
        let waiting: Vec<String> = r
            .partitions
            .iter()
            .zip(reads)
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
                    "{} did not arrive from Kafka brokers {} within broker_timeout = {}s; check \
                     that they are up and reachable. Weir resumes from this epoch when restarted",
                    waiting.join(", "),
                    self.servers,
                    self.broker_timeout.as_secs()
                ),
                None,
            ));
        }
        tracing::warn!(
            source = %self.name,
            "waiting for {} from Kafka brokers {} (no record for {:.0}s; giving up after \
             broker_timeout = {}s)",
            waiting.join(", "),
            self.servers,
            last_progress.elapsed().as_secs_f64(),
            self.broker_timeout.as_secs()
        );
        Ok(())
    }

    /// The records of every partition read, in the range's order, with their metadata
    /// columns (`_topic`, `_partition`, `_offset`, `_key`, `_timestamp`).
    fn raw_batch(&self, r: &KafkaRange, reads: Vec<PartitionRead>) -> RawBatch {
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
        raw
    }
}

/// Files a polled message: into its partition's read when it lies in the range, else
/// into the stash for the next range (fetched ahead, or from an assigned partition with
/// no range this epoch), which starts where this one ends.
fn take_message(
    stash: &mut BTreeMap<TopicPartition, Vec<StashedRecord>>,
    read_end: &BTreeMap<TopicPartition, i64>,
    r: &KafkaRange,
    reads: &mut [PartitionRead],
    m: &BorrowedMessage<'_>,
    found: Option<usize>,
) {
    let Some(i) = found.filter(|&i| m.offset() < r.partitions[i].until) else {
        let tp = (m.topic().to_string(), m.partition());
        if read_end.contains_key(&tp) {
            stash.entry(tp).or_default().push(StashedRecord {
                offset: m.offset(),
                payload: m.payload().unwrap_or_default().to_vec(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                timestamp: m.timestamp().to_millis(),
            });
        }
        if let Some(i) = found {
            reads[i].position = reads[i].position.max(m.offset() + 1);
        }
        return;
    };
    let (p, read) = (&r.partitions[i], &mut reads[i]);
    read.position = read.position.max(m.offset() + 1);
    if m.offset() < p.from {
        return;
    }
    read.records.push(m.payload().unwrap_or_default());
    read.offsets.push(m.offset());
    read.keys
        .push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
    read.timestamps.push(m.timestamp().to_millis());
}

/// Whether a read that has waited `since_progress` for its next record, and last said so
/// `since_report` ago, should say so again (or fail, past `broker_timeout`): only a read
/// without a record for [`REPORT_EVERY`] is waiting; a long read that keeps receiving records
/// is working, and says nothing.
fn stalled(since_progress: Duration, since_report: Duration, broker_timeout: Duration) -> bool {
    since_progress > broker_timeout
        || (since_progress > REPORT_EVERY && since_report > REPORT_EVERY)
}

#[cfg(test)]
mod stall_tests {
    use super::*;

    #[test]
    fn only_a_read_without_records_is_reported_as_waiting() {
        let timeout = Duration::from_secs(300);
        let s = Duration::from_secs;
        // Records keep arriving during a long read: nothing to say.
        assert!(!stalled(s(0), s(60), timeout));
        // No record for 11 s, last said 11 s ago: say so; said 2 s ago: not again yet.
        assert!(stalled(s(11), s(11), timeout));
        assert!(!stalled(s(11), s(2), timeout));
        // Past broker_timeout: always (the read fails).
        assert!(stalled(s(301), s(0), timeout));
    }
}
