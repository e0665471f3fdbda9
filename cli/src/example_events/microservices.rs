//! A shop's services (`examples/microservices`): carts, checkouts, orders and payments on six
//! topics, keyed by user. Each session adds 1-3 items; 65% check out 1-20 minutes later, which
//! creates an order, a payment (8% fail) and, once paid, a confirmation; the rest abandon
//! their cart. One session in 50 is a burst: 4 orders by the same user within two minutes.
//! 0.5% of `order.created` messages are cut short (dead letters).

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{money, start, timestamp, weighted, ExampleEvent};

/// The topics of this kind.
pub const TOPICS: &[&str] = &[
    "order.created",
    "payment.processed",
    "payment.failed",
    "cart.item_added",
    "cart.checkout_initiated",
    "order.confirmed",
];

const METHODS: [(&str, u32); 3] = [("card", 75), ("paypal", 20), ("voucher", 5)];
const FAILURES: [(&str, u32); 3] = [
    ("insufficient_funds", 50),
    ("card_declined", 35),
    ("fraud_suspected", 15),
];

/// The events of one session, pushed to `out`.
struct Session<'a> {
    rng: &'a mut ChaCha8Rng,
    out: &'a mut Vec<ExampleEvent>,
    user: String,
    id: u64,
}

impl Session<'_> {
    fn push(&mut self, topic: &'static str, payload: serde_json::Value, at: DateTime<Utc>) {
        let event = ExampleEvent::new(self.rng, topic, self.user.clone(), payload, at);
        self.out.push(event);
    }

    /// 1-3 items added from `at`; returns the cart's value in cents and the last add's time.
    fn fill_cart(&mut self, at: DateTime<Utc>) -> (i64, DateTime<Utc>) {
        let mut value = 0;
        let mut last = at;
        for item in 0..self.rng.random_range(1..=3) {
            last = at + Duration::seconds(item * 20);
            let product = self.rng.random_range(1..=120);
            let price = 500 + product * 731 % 20_000;
            let quantity = self.rng.random_range(1..=2);
            value += price * quantity;
            let payload = json!({
                "event_id": format!("a{}-{item}", self.id),
                "user_id": self.user,
                "product_id": format!("p{product:03}"),
                "quantity": quantity,
                "price": money(price),
                "ts": timestamp(last),
            });
            self.push("cart.item_added", payload, last);
        }
        (value, last)
    }

    /// An order of `cents` at `at`: created, paid or failed, confirmed when paid.
    fn order(&mut self, n: u64, cents: i64, at: DateTime<Utc>) {
        let order_id = format!("o{}-{n}", self.id);
        let created = json!({
            "order_id": order_id,
            "user_id": self.user,
            "amount": money(cents),
            "items": self.rng.random_range(1..=3),
            "ts": timestamp(at),
        });
        let event = ExampleEvent::new(self.rng, "order.created", self.user.clone(), created, at);
        if self.rng.random_bool(0.005) {
            self.out.push(event.truncated());
            return;
        }
        self.out.push(event);
        let paid_at = at + Duration::seconds(10);
        if self.rng.random_bool(0.08) {
            let failed = json!({
                "payment_id": format!("pay{}-{n}", self.id),
                "order_id": order_id,
                "user_id": self.user,
                "amount": money(cents),
                "reason": weighted(self.rng, &FAILURES),
                "ts": timestamp(paid_at),
            });
            self.push("payment.failed", failed, paid_at);
            return;
        }
        let paid = json!({
            "payment_id": format!("pay{}-{n}", self.id),
            "order_id": order_id,
            "user_id": self.user,
            "amount": money(cents),
            "method": weighted(self.rng, &METHODS),
            "ts": timestamp(paid_at),
        });
        self.push("payment.processed", paid, paid_at);
        let confirmed_at = paid_at + Duration::seconds(5);
        let confirmed = json!({
            "order_id": order_id,
            "user_id": self.user,
            "ts": timestamp(confirmed_at),
        });
        self.push("order.confirmed", confirmed, confirmed_at);
    }

    /// A whole session starting at `at`.
    fn run(&mut self, at: DateTime<Utc>) {
        let (value, last_add) = self.fill_cart(at);
        if self.rng.random_bool(0.02) {
            // A burst: four large orders within two minutes, no cart checkout.
            for n in 0..4 {
                let cents = value * 4 + self.rng.random_range(0..50_000);
                self.order(n, cents, last_add + Duration::seconds(n as i64 * 30));
            }
            return;
        }
        if !self.rng.random_bool(0.65) {
            return; // abandoned
        }
        let checkout_at = last_add + Duration::seconds(self.rng.random_range(60..1_200));
        let checkout = json!({
            "event_id": format!("c{}", self.id),
            "user_id": self.user,
            "cart_value": money(value),
            "ts": timestamp(checkout_at),
        });
        self.push("cart.checkout_initiated", checkout, checkout_at);
        self.order(0, value, checkout_at + Duration::seconds(5));
    }
}

pub(super) fn generate(events: u64, seed: u64) -> Vec<ExampleEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(events as usize + 16);
    let mut id = 0u64;
    while (out.len() as u64) < events + 16 {
        let at = start() + Duration::seconds(id as i64);
        let user = format!("u{:04}", rng.random_range(1..=2_000));
        Session {
            rng: &mut rng,
            out: &mut out,
            user,
            id,
        }
        .run(at);
        id += 1;
    }
    out
}
