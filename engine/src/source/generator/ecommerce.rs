//! Built-in e-commerce event generator for demos, tests and benchmarks.
//!
//! Event `i` of a seed is a pure function of `(seed, i)`, so any epoch split of the same range
//! yields the same events, and a replayed epoch reads exactly what it read before. Events are
//! produced as JSON text and decoded through the same path as real input.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Event types with their weights (per mille).
const EVENT_TYPES: [(&str, u32); 6] = [
    ("view", 560),
    ("add_to_cart", 160),
    ("remove_from_cart", 40),
    ("checkout", 90),
    ("purchase", 120),
    ("refund", 30),
];
const CATEGORIES: [&str; 8] = [
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
    "grocery",
];
const PAYMENT_METHODS: [(&str, u32); 6] = [
    ("card", 550),
    ("paypal", 180),
    ("apple_pay", 110),
    ("google_pay", 80),
    ("bank_transfer", 50),
    ("crypto", 30),
];
/// (country code, currency, cities); country codes are sometimes emitted in lower case or with
/// spaces, which the example's silver layer cleans.
const COUNTRIES: [(&str, &str, [&str; 3]); 12] = [
    ("US", "USD", ["New York", "Austin", "Seattle"]),
    ("GB", "GBP", ["London", "Leeds", "Bristol"]),
    ("DE", "EUR", ["Berlin", "Munich", "Hamburg"]),
    ("FR", "EUR", ["Paris", "Lyon", "Lille"]),
    ("IN", "INR", ["Mumbai", "Pune", "Delhi"]),
    ("BR", "BRL", ["Sao Paulo", "Rio", "Recife"]),
    ("JP", "JPY", ["Tokyo", "Osaka", "Kyoto"]),
    ("CA", "CAD", ["Toronto", "Ottawa", "Calgary"]),
    ("NG", "NGN", ["Lagos", "Abuja", "Ibadan"]),
    ("RU", "RUB", ["Moscow", "Kazan", "Omsk"]),
    ("KP", "KPW", ["Pyongyang", "Kaesong", "Wonsan"]),
    ("VE", "VES", ["Caracas", "Maracay", "Valencia"]),
];

/// Settings of the e-commerce generator (the `generator` connector's options).
#[derive(Debug, Clone, PartialEq)]
pub struct EcommerceConfig {
    /// Seed: the same seed gives the same events.
    pub seed: u64,
    /// Event time of event 0, epoch milliseconds.
    pub start_time_ms: i64,
    /// Event-time distance between consecutive events, milliseconds.
    pub spacing_ms: i64,
    /// Fraction of events that arrive 12-30 minutes after their event time.
    pub late_ratio: f64,
    /// Fraction of events that repeat an earlier event (same event_id and payload).
    pub duplicate_ratio: f64,
    /// Fraction of events emitted as broken JSON.
    pub malformed_ratio: f64,
    /// Number of distinct users.
    pub users: u64,
    /// Number of distinct products.
    pub products: u64,
    /// Number of distinct merchants.
    pub merchants: u64,
}

impl Default for EcommerceConfig {
    fn default() -> Self {
        EcommerceConfig {
            seed: 42,
            // 2024-03-01T00:00:00Z, a Friday, so a million events span a weekend.
            start_time_ms: 1_709_251_200_000,
            spacing_ms: 250,
            late_ratio: 0.01,
            duplicate_ratio: 0.01,
            malformed_ratio: 0.001,
            users: 20_000,
            products: 5_000,
            merchants: 200,
        }
    }
}

/// Generates events by index.
#[derive(Debug, Clone)]
pub struct EcommerceGenerator {
    config: EcommerceConfig,
}

/// The category of `product` (the same in every event and in `products.csv`).
pub fn product_category(product: u64) -> &'static str {
    CATEGORIES[(product % CATEGORIES.len() as u64) as usize]
}

fn home_country_index(user: u64) -> usize {
    (splitmix(user) % COUNTRIES.len() as u64) as usize
}

/// The country code `user`'s events come from (its signup country in `users.csv`).
pub fn home_country(user: u64) -> &'static str {
    COUNTRIES[home_country_index(user)].0
}

/// A stable 0.5% of users are known fraudsters.
fn is_fraudster(user: u64) -> bool {
    splitmix(user ^ 0x5eed).is_multiple_of(200)
}

/// The first fraudster at or after `user` (wrapping around), or `user` if there is none.
fn fraudster_near(user: u64, users: u64) -> u64 {
    (0..users.min(10_000))
        .map(|i| (user + i) % users)
        .find(|u| is_fraudster(*u))
        .unwrap_or(user)
}

impl EcommerceGenerator {
    /// A generator with these settings.
    pub fn new(config: EcommerceConfig) -> Self {
        EcommerceGenerator { config }
    }

    fn rng_for(&self, index: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(splitmix(self.config.seed ^ splitmix(index)))
    }

    /// Appends event `index` as one line of JSON text (no trailing newline) to `out`.
    pub fn write_event(&self, index: u64, out: &mut Vec<u8>) {
        // A duplicate re-sends an event from shortly before, unchanged: the same line the
        // original was, as an at-least-once producer would send it twice.
        let (original, mut rng) = match self.original_of(index) {
            Some(found) => found,
            None => {
                // Truncated JSON, as a crashed producer would leave it.
                let _ = write!(out, r#"{{"event_id":"evt-{index:010}","event_type":"purch"#);
                return;
            }
        };
        self.write_payload(original, &mut rng, out);
    }

    /// The event `index` repeats (itself, unless it is a duplicate) and the random state its
    /// payload is drawn from; `None` when that event is malformed.
    fn original_of(&self, index: u64) -> Option<(u64, ChaCha8Rng)> {
        let c = &self.config;
        let mut at = index;
        loop {
            let mut rng = self.rng_for(at);
            if rng.random_bool(c.malformed_ratio) {
                return None;
            }
            if at > 10 && rng.random_bool(c.duplicate_ratio) {
                at -= rng.random_range(1..=10);
                continue;
            }
            return Some((at, rng));
        }
    }

    fn write_payload(&self, index: u64, rng: &mut ChaCha8Rng, out: &mut Vec<u8>) {
        let c = &self.config;
        // Card testing: the first 8 of every 1000 events are one fraudster's burst of purchases
        // within seconds (what fraud velocity rules look for).
        let burst = index % 1000 < 8 && c.users > 0;
        let user = if burst {
            fraudster_near(splitmix((index / 1000) ^ 0xb0b) % c.users, c.users)
        } else {
            rng.random_range(0..c.users)
        };
        let known_fraud = is_fraudster(user);
        let event_type = if burst {
            "purchase"
        } else {
            weighted(rng, &EVENT_TYPES)
        };
        let product = rng.random_range(0..c.products);
        let category = product_category(product);
        let merchant = splitmix(product) % c.merchants;
        // Prices: mostly tens to hundreds, a long tail into the thousands.
        let base = 5.0 + (splitmix(product ^ 0xabc) % 40_000) as f64 / 100.0;
        let amount = if rng.random_bool(0.02) {
            base * rng.random_range(15.0..40.0)
        } else {
            base * rng.random_range(0.8..1.2)
        };
        let amount = if event_type == "refund" {
            -amount
        } else {
            amount
        };
        let payment = weighted(rng, &PAYMENT_METHODS);
        let (country, currency, cities) = COUNTRIES[home_country_index(user)];
        let city = cities[rng.random_range(0..cities.len())];
        let country_text = match rng.random_range(0..20) {
            0 => country.to_ascii_lowercase(),
            1 => format!(" {country} "),
            _ => country.to_string(),
        };
        let device = splitmix(user ^ 0xdef) % 3;
        let mut event_time = c.start_time_ms + index as i64 * c.spacing_ms;
        // Out of order within a few seconds; some 12-30 minutes late, more than the example's
        // 10-minute watermark delay, so they are late whenever the watermark of the epoch
        // they arrive in has passed them.
        event_time -= rng.random_range(0..3_000);
        if rng.random_bool(c.late_ratio) {
            event_time -= rng.random_range(720_000..1_800_000);
        }
        let session = (c.start_time_ms + index as i64 * c.spacing_ms) / 1_800_000;
        let ts = chrono::DateTime::from_timestamp_millis(event_time)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        let _ = write!(
            out,
            concat!(
                r#"{{"event_id":"evt-{:010}","event_type":"{}","user_id":"u{:06}","#,
                r#""session_id":"s{:06}-{}","product_id":"p{:05}","category":"{}","#,
                r#""merchant":"m{:04}","amount":{:.2},"currency":"{}","payment_method":"{}","#,
                r#""country":"{}","city":"{}","device_id":"d{:06}-{}","is_known_fraud":{},"#,
                r#""event_time":"{}"}}"#
            ),
            index,
            event_type,
            user,
            user,
            session,
            product,
            category,
            merchant,
            amount,
            currency,
            payment,
            country_text,
            city,
            user,
            device,
            known_fraud,
            ts,
        );
    }
}

/// One name of `table` drawn by its weight (shared with the CLI's other example events).
pub fn weighted<'a>(rng: &mut ChaCha8Rng, table: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (name, w) in table {
        if pick < *w {
            return name;
        }
        pick -= w;
    }
    table[0].0
}

/// A 64-bit mixing function (SplitMix64's finaliser): spreads indices into independent seeds.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(g: &EcommerceGenerator, range: std::ops::Range<u64>) -> Vec<String> {
        range
            .map(|i| {
                let mut buf = Vec::new();
                g.write_event(i, &mut buf);
                String::from_utf8(buf).unwrap()
            })
            .collect()
    }

    #[test]
    fn same_seed_same_events_whatever_the_split() {
        let g = EcommerceGenerator::new(EcommerceConfig::default());
        let whole = events(&g, 0..1000);
        let mut parts = events(&g, 0..400);
        parts.extend(events(&g, 400..1000));
        assert_eq!(whole, parts);
    }

    #[test]
    fn ratios_show_up() {
        let g = EcommerceGenerator::new(EcommerceConfig {
            malformed_ratio: 0.05,
            ..EcommerceConfig::default()
        });
        let evs = events(&g, 0..4000);
        let broken = evs
            .iter()
            .filter(|e| serde_json::from_str::<serde_json::Value>(e).is_err())
            .count();
        assert!((100..400).contains(&broken), "{broken}");
        let ok: Vec<serde_json::Value> = evs
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect();
        assert!(ok.iter().any(|e| e["payment_method"] == "crypto"));
        assert!(ok.iter().any(|e| e["event_type"] == "refund"));
        let mut ids: Vec<&str> = ok.iter().filter_map(|e| e["event_id"].as_str()).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert!(ids.len() < before, "duplicates expected");
    }

    #[test]
    fn a_duplicate_is_the_same_line_as_its_original() {
        let g = EcommerceGenerator::new(EcommerceConfig {
            duplicate_ratio: 0.2,
            ..EcommerceConfig::default()
        });
        let evs = events(&g, 0..2000);
        let mut by_id: std::collections::HashMap<String, &String> = Default::default();
        let mut repeated = 0;
        for e in &evs {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(e) else {
                continue;
            };
            let id = v["event_id"].as_str().unwrap_or_default().to_string();
            match by_id.get(&id) {
                Some(first) => {
                    repeated += 1;
                    assert_eq!(*first, e, "a copy of {id} differs from the original");
                }
                None => {
                    by_id.insert(id, e);
                }
            }
        }
        assert!(repeated > 200, "{repeated}");
    }
}
