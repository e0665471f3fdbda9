//! What the brokers know: a topic's partitions and their offsets (with the same waiting and
//! backoff as reading), where each partition's next range starts, and the consumer lag.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use serde_json::Value;

use super::{
    FetchError, KafkaSource, PartitionLag, PartitionRange, StartingOffsets, TopicPartition,
    Watermarks, MAX_BACKOFF, REQUEST_TIMEOUT,
};
use crate::error::Result;
use crate::source::Source;

impl KafkaSource {
    pub(super) fn partitions(&self) -> Result<Vec<(TopicPartition, Watermarks)>> {
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
    pub(super) fn partition_lag(&mut self, history: &[Value]) -> Result<Vec<PartitionLag>> {
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
pub(super) fn start_offset(
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
pub(super) fn limit_ranges(ranges: &mut Vec<PartitionRange>, cap: u64) {
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
