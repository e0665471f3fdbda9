//! Point-of-sale transactions and refunds (`examples/retail`): topic `transactions` keyed by
//! transaction id (1% sent twice), topic `refunds` keyed by refund id, for about 4% of
//! transactions 1-30 minutes after them; 0.2% of transactions are cut short.

use chrono::Duration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{money, start, timestamp, weighted, ExampleEvent};

/// The topics of this kind.
pub const TOPICS: &[&str] = &["transactions", "refunds"];

const PAYMENT_METHODS: [(&str, u32); 3] = [("card", 70), ("cash", 20), ("mobile", 10)];
const REFUND_REASONS: [(&str, u32); 3] =
    [("damaged", 40), ("wrong_item", 35), ("changed_mind", 25)];

pub(super) fn generate(events: u64, seed: u64) -> Vec<ExampleEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(events as usize + 16);
    let mut i = 0u64;
    while (out.len() as u64) < events + 16 {
        let at = start() + Duration::milliseconds(i as i64 * 250);
        let id = format!("t{i:08}");
        // A few products sell far more than the rest.
        let product = if rng.random_bool(0.3) {
            rng.random_range(1..=10)
        } else {
            rng.random_range(1..=200)
        };
        let unit_cents = 199 + (product * 137 % 9_800);
        let quantity = rng.random_range(1..=5);
        let amount = unit_cents * quantity;
        let payload = json!({
            "transaction_id": id,
            "store_id": format!("s{:02}", rng.random_range(1..=20)),
            "product_id": format!("p{product:03}"),
            "quantity": quantity,
            "unit_price": money(unit_cents),
            "amount": money(amount),
            "payment_method": weighted(&mut rng, &PAYMENT_METHODS),
            "ts": timestamp(at),
        });
        let sale = ExampleEvent::new(&mut rng, "transactions", id.clone(), payload, at);
        if rng.random_bool(0.002) {
            out.push(sale.truncated());
            i += 1;
            continue;
        }
        if rng.random_bool(0.01) {
            out.push(sale.redelivered(&mut rng));
        }
        out.push(sale);
        if rng.random_bool(0.04) {
            let refund_at = at + Duration::seconds(rng.random_range(60..1_800));
            let refund_id = format!("r{i:08}");
            let refund = json!({
                "refund_id": refund_id,
                "transaction_id": id,
                "product_id": format!("p{product:03}"),
                "amount": money(amount * rng.random_range(1..=quantity) / quantity),
                "reason": weighted(&mut rng, &REFUND_REASONS),
                "ts": timestamp(refund_at),
            });
            out.push(ExampleEvent::new(
                &mut rng, "refunds", refund_id, refund, refund_at,
            ));
        }
        i += 1;
    }
    out
}
