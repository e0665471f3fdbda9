//! User events of the event processor (`examples/event-processor`): topic `events` keyed by
//! user, camelCase fields as the original Spark job reads them (`eventId`, `userId`,
//! `eventType`, `value`, `timestamp`); 3% are delivered twice.

use chrono::Duration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{money, start, timestamp, weighted, ExampleEvent};

/// The topics of this kind.
pub const TOPICS: &[&str] = &["events"];

const EVENT_TYPES: [(&str, u32); 4] = [("click", 60), ("view", 25), ("like", 10), ("share", 5)];

pub(super) fn generate(events: u64, seed: u64) -> Vec<ExampleEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(events as usize + 16);
    let mut i = 0u64;
    while (out.len() as u64) < events + 16 {
        let at = start() + Duration::milliseconds(i as i64 * 100);
        let user = format!("user{:03}", rng.random_range(1..=300));
        let payload = json!({
            "eventId": format!("e{i:09}"),
            "userId": user,
            "eventType": weighted(&mut rng, &EVENT_TYPES),
            "value": money(rng.random_range(0..10_000)),
            "timestamp": timestamp(at),
        });
        let event = ExampleEvent::new(&mut rng, "events", user, payload, at);
        if rng.random_bool(0.03) {
            out.push(event.redelivered(&mut rng));
        }
        out.push(event);
        i += 1;
    }
    out
}
