//! Generated events of the Kafka examples that are not e-commerce (`weir produce
//! --from-generator retail | microservices | clicks`): each kind writes to its own topics,
//! keyed as the service that would send them keys them, out of order by up to 30 seconds (less
//! than every example's watermark delay), with redelivered duplicates and a few malformed
//! messages. The same seed gives the same messages, so a test can compute what to expect.

mod clicks;
mod microservices;
mod retail;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use weir_engine::source::generator::ecommerce::weighted;

/// One message: its topic, key and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleEvent {
    /// The topic it goes to (without the `--topic-prefix`).
    pub topic: &'static str,
    /// The message key.
    pub key: String,
    /// The JSON text (or, for a malformed message, what a broken producer sent).
    pub payload: String,
    /// When the event happened; the broker receives the events in `arrival` order.
    event_time: DateTime<Utc>,
    /// Event time plus a random delay: the order messages are sent in.
    arrival: DateTime<Utc>,
}

/// The generated kinds and the topics each writes.
pub const KINDS: [(&str, &[&str]); 3] = [
    ("retail", retail::TOPICS),
    ("microservices", microservices::TOPICS),
    ("clicks", clicks::TOPICS),
];

/// About `events` messages of `kind` for `seed`, in the order they are sent; `None` for a
/// kind that is not one of [`KINDS`].
pub fn generate(kind: &str, events: u64, seed: u64) -> Option<Vec<ExampleEvent>> {
    let mut out = match kind {
        "retail" => retail::generate(events, seed),
        "microservices" => microservices::generate(events, seed),
        "clicks" => clicks::generate(events, seed),
        _ => return None,
    };
    out.sort_by_key(|e| e.arrival);
    out.truncate(events as usize);
    Some(out)
}

/// The first event time of every kind: 2026-01-01 00:00 UTC.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The longest delay between an event and its sending: every example's watermark delay is
/// longer, so no generated event is late.
const MAX_DELAY_MS: i64 = 30_000;

impl ExampleEvent {
    /// An event of `topic` at `event_time`, sent after a random delay of up to
    /// [`MAX_DELAY_MS`].
    fn new(
        rng: &mut ChaCha8Rng,
        topic: &'static str,
        key: String,
        payload: serde_json::Value,
        event_time: DateTime<Utc>,
    ) -> Self {
        let delay = Duration::milliseconds(rng.random_range(0..MAX_DELAY_MS));
        ExampleEvent {
            topic,
            key,
            payload: payload.to_string(),
            event_time,
            arrival: event_time + delay,
        }
    }

    /// The same message sent again (an at-least-once producer's retry), within the same
    /// delay of its event time.
    fn redelivered(&self, rng: &mut ChaCha8Rng) -> Self {
        let mut again = self.clone();
        again.arrival = self.event_time + Duration::milliseconds(rng.random_range(0..MAX_DELAY_MS));
        again
    }

    /// The message cut short, as a crashing producer leaves it.
    fn truncated(mut self) -> Self {
        let cut = self.payload.len() / 2;
        self.payload.truncate(cut);
        self
    }

    /// When the event happened.
    pub fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
}

/// An event time as the examples' JSON writes it (RFC 3339, milliseconds, UTC).
fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A price in cents as a JSON number with two decimals.
fn money(cents: i64) -> serde_json::Value {
    serde_json::json!((cents as f64) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_messages_and_none_is_late() {
        for (kind, topics) in KINDS {
            let a = generate(kind, 2_000, 7).unwrap();
            assert_eq!(a, generate(kind, 2_000, 7).unwrap(), "{kind}");
            assert_eq!(a.len(), 2_000, "{kind}");
            assert!(a.iter().all(|e| topics.contains(&e.topic)), "{kind}");
            let mut latest = start();
            for e in &a {
                assert!(
                    e.event_time >= latest - Duration::milliseconds(MAX_DELAY_MS),
                    "{kind}: an event behind the latest by more than {MAX_DELAY_MS} ms"
                );
                latest = latest.max(e.event_time);
            }
        }
    }
}
