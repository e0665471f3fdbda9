//! Keys of the largest event times the watermark is computed from: a source, or one partition
//! of it (a Kafka topic partition), as typed values. The checkpoint stores them as
//! `source` or `source/topic/partition` (the format since the first checkpoint version);
//! [`EventTimeKey::checkpoint_key`] and [`EventTimeKey::from_checkpoint_key`] are the one
//! place that writes and reads that text.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One partition of a source: a Kafka topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePartition {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
}

/// What a largest event time is kept for: a whole source, or one partition of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTimeKey {
    /// The source, as named in `CREATE SOURCE`.
    pub source: String,
    /// The partition, for sources with partitions.
    pub partition: Option<SourcePartition>,
}

impl EventTimeKey {
    /// The key of `partition` of `source`.
    pub fn new(source: &str, partition: Option<SourcePartition>) -> Self {
        EventTimeKey {
            source: source.to_string(),
            partition,
        }
    }

    /// The key as the checkpoint stores it: `source` or `source/topic/partition`.
    pub fn checkpoint_key(&self) -> String {
        match &self.partition {
            Some(p) => format!("{}/{}/{}", self.source, p.topic, p.partition),
            None => self.source.clone(),
        }
    }

    /// Reads a key the checkpoint stored. Source names and Kafka topics hold no `/`, so the
    /// first `/` ends the source and the last one starts the partition number.
    pub fn from_checkpoint_key(text: &str) -> Self {
        let partition = text.split_once('/').and_then(|(_, rest)| {
            let (topic, number) = rest.rsplit_once('/')?;
            Some(SourcePartition {
                topic: topic.to_string(),
                partition: number.parse().ok()?,
            })
        });
        let source = match &partition {
            Some(_) => text.split_once('/').map_or(text, |(s, _)| s),
            None => text,
        };
        EventTimeKey {
            source: source.to_string(),
            partition,
        }
    }
}

/// Largest event times (epoch milliseconds) per source or partition.
pub type MaxEventTimes = BTreeMap<EventTimeKey, i64>;

/// Serde for [`MaxEventTimes`] as the checkpoint's map of text keys.
pub mod checkpoint_format {
    use super::*;

    /// Writes the map with [`EventTimeKey::checkpoint_key`] keys.
    pub fn serialize<S: Serializer>(times: &MaxEventTimes, s: S) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<String, i64> = times
            .iter()
            .map(|(k, v)| (k.checkpoint_key(), *v))
            .collect();
        text.serialize(s)
    }

    /// Reads the map written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MaxEventTimes, D::Error> {
        let text = BTreeMap::<String, i64>::deserialize(d)?;
        Ok(text
            .into_iter()
            .map(|(k, v)| (EventTimeKey::from_checkpoint_key(&k), v))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_checkpoint_text() {
        let keys = [
            EventTimeKey::new("ev", None),
            EventTimeKey::new(
                "orders",
                Some(SourcePartition {
                    topic: "shop.orders-v2".into(),
                    partition: 11,
                }),
            ),
        ];
        for key in keys {
            assert_eq!(
                EventTimeKey::from_checkpoint_key(&key.checkpoint_key()),
                key
            );
        }
        assert_eq!(
            EventTimeKey::new("orders", None).checkpoint_key(),
            "orders",
            "a source without partitions keeps the old key"
        );
    }
}
