//! The example's windowed gold tables, run with `--drain` so every window is emitted, equal
//! batch DataFusion queries written independently of Weir's window rewrites (date_bin buckets,
//! window functions for sessions) over the lake's silver table.

use weir_tests::{example, lake_context, run_pipeline_with, scalar, sorted_rows, TestError};

const SMALL: &[(&str, &str)] = &[("EVENTS", "30000"), ("EVENTS_PER_TRIGGER", "6000")];

/// Asserts that `actual` (over a gold table) and `expected` (a batch query) give the same rows.
async fn assert_same(
    ctx: &datafusion::prelude::SessionContext,
    table: &str,
    actual: &str,
    expected: &str,
) -> Result<(), TestError> {
    let expected = sorted_rows(ctx, expected).await?;
    let actual = sorted_rows(ctx, actual).await?;
    assert!(!expected.is_empty(), "{table}: the batch answer is empty");
    assert_eq!(actual.len(), expected.len(), "{table}: row count");
    let differ: Vec<_> = actual
        .iter()
        .zip(&expected)
        .filter(|(a, e)| a != e)
        .take(3)
        .collect();
    assert!(
        differ.is_empty(),
        "{table}: rows differ from the batch answer, e.g. (weir, batch): {differ:?}"
    );
    Ok(())
}

const PURCHASES: &str = "(SELECT * FROM silver.events WHERE event_type = 'purchase')";

fn hourly(input: &str) -> String {
    format!(
        "(SELECT *, date_bin(INTERVAL '1 hour', event_time) AS ws, \
                    date_bin(INTERVAL '1 hour', event_time) + INTERVAL '1 hour' AS we FROM {input})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_tables_equal_the_batch_answer() -> Result<(), TestError> {
    let lake = tempfile::tempdir()?;
    let run = run_pipeline_with(&example("ecommerce"), lake.path(), SMALL, true).await?;
    // The generator's late events (12-30 minutes, beyond the 10-minute watermark delay) are
    // left out by silver's dedupe when the watermark has passed them; every window reads
    // silver, so none of them finds a late row, and the batch answer over silver is theirs.
    let late_at = |node: &str| -> u64 {
        run.epochs
            .iter()
            .filter_map(|e| e.late_rows.get(node))
            .sum()
    };
    let late_in_windows: u64 = run
        .epochs
        .iter()
        .flat_map(|e| e.late_rows.iter())
        .filter(|(node, _)| node.as_str() != "silver.events")
        .map(|(_, n)| n)
        .sum();
    assert!(
        late_at("silver.events") > 0,
        "some events were late for silver"
    );
    assert_eq!(late_in_windows, 0);
    let ctx = lake_context(lake.path()).await?;

    // Spark syntax: GROUP BY window(event_time, '1 hour'), user_id.
    assert_same(
        &ctx,
        "gold.user_spend_hourly",
        "SELECT window_start, window_end, user_id, round(spend, 6), purchases, merchants, \
         payment_methods FROM gold.user_spend_hourly",
        &format!(
            "SELECT ws, we, user_id, round(sum(amount), 6), count(*), count(DISTINCT merchant), \
             count(DISTINCT payment_method) FROM {} AS h GROUP BY ws, we, user_id",
            hourly(PURCHASES)
        ),
    )
    .await?;

    assert_same(
        &ctx,
        "gold.country_30m",
        "SELECT window_start, window_end, country, events, purchases, round(revenue, 6), users \
         FROM gold.country_30m",
        "SELECT ws, ws + INTERVAL '30 minutes', country, count(*), \
         count(*) FILTER (WHERE event_type = 'purchase'), \
         round(sum(amount) FILTER (WHERE event_type = 'purchase'), 6), count(DISTINCT user_id) \
         FROM (SELECT *, date_bin(INTERVAL '30 minutes', event_time) AS ws FROM silver.events) AS t \
         GROUP BY ws, country",
    )
    .await?;

    // Exact columns equal; the sketches (approx_distinct, the t-digest median) are merged from
    // per-epoch partial states, so they are checked to be close to the exact answer instead.
    assert_same(
        &ctx,
        "gold.hourly_summary",
        "SELECT window_start, events, purchases, refunds, round(revenue, 6), \
         round(order_value_stddev, 6) FROM gold.hourly_summary",
        &format!(
            "SELECT ws, count(*), count(*) FILTER (WHERE event_type = 'purchase'), \
             count(*) FILTER (WHERE event_type = 'refund'), \
             round(sum(amount) FILTER (WHERE event_type = 'purchase'), 6), \
             round(stddev(amount) FILTER (WHERE event_type = 'purchase'), 6) \
             FROM {} AS h GROUP BY ws",
            hourly("silver.events")
        ),
    )
    .await?;
    let far_off = scalar(
        &ctx,
        &format!(
            "SELECT count(*) FROM gold.hourly_summary AS g JOIN \
               (SELECT ws, count(DISTINCT user_id) AS users, \
                       median(amount) FILTER (WHERE event_type = 'purchase') AS median, \
                       count(*) FILTER (WHERE event_type = 'purchase') AS purchases \
                FROM {} AS h GROUP BY ws) AS b ON g.window_start = b.ws \
             WHERE abs(g.active_users - b.users) > 0.05 * b.users \
                OR (b.purchases >= 100 \
                    AND abs(g.median_order_value - b.median) > 0.1 * b.median)",
            hourly("silver.events")
        ),
    )
    .await?;
    assert_eq!(
        far_off, 0,
        "approx_distinct within 5% of the exact count; the median within 10% (hours with 100+ \
         purchases: with a handful, approx_percentile_cont picks a value, median averages two)"
    );

    // HOP 30 minutes every 5, HAVING more than 5 purchases.
    assert_same(
        &ctx,
        "fraud.velocity",
        "SELECT window_start, window_end, user_id, purchases, round(amount, 6) FROM fraud.velocity",
        &format!(
            "SELECT ws, ws + INTERVAL '30 minutes', user_id, count(*), round(sum(amount), 6) FROM \
               (SELECT p.*, date_bin(INTERVAL '5 minutes', event_time) - o.back AS ws \
                FROM {PURCHASES} AS p CROSS JOIN (VALUES (INTERVAL '0 minutes'), \
                  (INTERVAL '5 minutes'), (INTERVAL '10 minutes'), (INTERVAL '15 minutes'), \
                  (INTERVAL '20 minutes'), (INTERVAL '25 minutes')) AS o(back)) AS h \
             GROUP BY ws, user_id HAVING count(*) > 5"
        ),
    )
    .await?;

    // Top 10 products per hour by units (then revenue, then id), over the emitted hour.
    assert_same(
        &ctx,
        "gold.top_products_hourly",
        "SELECT window_start, product_id, units, units_rank FROM gold.top_products_hourly",
        &format!(
            "SELECT ws, product_id, units, r FROM \
               (SELECT ws, product_id, count(*) AS units, \
                       ROW_NUMBER() OVER (PARTITION BY ws \
                           ORDER BY count(*) DESC, sum(amount) DESC, product_id) AS r \
                FROM {} AS h GROUP BY ws, product_id) AS ranked WHERE r <= 10",
            hourly(PURCHASES)
        ),
    )
    .await?;
    let per_hour = scalar(
        &ctx,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM gold.top_products_hourly \
         GROUP BY window_start) AS h",
    )
    .await?;
    assert_eq!(per_hour, 10, "a top 10 holds 10 products an hour");
    let refunds = scalar(&ctx, "SELECT sum(refunds) FROM gold.hourly_summary").await?;
    assert!(
        refunds > 0,
        "silver keeps refunds, so the summary counts them"
    );

    // Sessions: a new session where the user's previous event is 30 minutes or more before.
    let gap = "INTERVAL '30 minutes'";
    assert_same(
        &ctx,
        "gold.sessions",
        "SELECT user_id, session_start, session_end, events, reached_cart, reached_checkout, \
         purchased, round(revenue, 6) FROM gold.sessions",
        &format!(
            "SELECT user_id, min(event_time), max(event_time) + {gap}, count(*), \
             bool_or(event_type = 'add_to_cart'), bool_or(event_type = 'checkout'), \
             bool_or(event_type = 'purchase'), \
             round(sum(amount) FILTER (WHERE event_type = 'purchase'), 6) FROM \
               (SELECT *, sum(CASE WHEN prev IS NULL OR event_time >= prev + {gap} THEN 1 ELSE 0 END) \
                   OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS sid FROM \
                 (SELECT *, lag(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS prev \
                  FROM silver.events) AS a) AS b \
             GROUP BY user_id, sid"
        ),
    )
    .await?;
    Ok(())
}
