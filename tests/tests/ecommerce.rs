//! The ecommerce example, end to end: generated events in, bronze / silver / fraud Delta tables
//! and dead letters out, checked against batch DataFusion over the same lake (the oracle).

use weir_tests::{
    checkpoint_dir, column_list, example, lake_context, run_pipeline, scalar, sorted_rows,
    stream_query, TestError,
};

const SMALL: &[(&str, &str)] = &[("EVENTS", "20000"), ("EVENTS_PER_TRIGGER", "4000")];

/// Asserts that `table` holds exactly the rows its own SQL gives as a batch query.
async fn assert_equals_oracle(
    ctx: &datafusion::prelude::SessionContext,
    table: &str,
) -> Result<(), TestError> {
    let oracle_sql = stream_query(&example("ecommerce"), table)?;
    assert_equals(ctx, table, &oracle_sql).await
}

/// Asserts that `table` holds exactly the rows of `oracle_sql`.
async fn assert_equals(
    ctx: &datafusion::prelude::SessionContext,
    table: &str,
    oracle_sql: &str,
) -> Result<(), TestError> {
    let cols = column_list(ctx, oracle_sql).await?;
    let expected =
        sorted_rows(ctx, &format!("SELECT {cols} FROM ({oracle_sql}) AS oracle")).await?;
    let actual = sorted_rows(ctx, &format!("SELECT {cols} FROM {table}")).await?;
    assert!(!expected.is_empty(), "{table}: the oracle returned no rows");
    assert_eq!(
        actual.len(),
        expected.len(),
        "{table}: row count differs from the batch answer"
    );
    assert!(
        actual == expected,
        "{table}: rows differ from the batch answer"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_tables_equal_the_batch_answer() -> Result<(), TestError> {
    let lake = tempfile::tempdir()?;
    let run = run_pipeline(&example("ecommerce"), lake.path(), SMALL).await?;
    assert_eq!(run.epochs.len(), 5, "20000 events at 4000 per epoch");
    let ctx = lake_context(lake.path()).await?;

    // Every generated event is either in bronze or dead-lettered, never both, never lost.
    let bronze = scalar(&ctx, "SELECT count(*) FROM bronze.events").await?;
    let dead = scalar(&ctx, "SELECT count(*) FROM _dead_letter.events").await?;
    assert!(dead > 0, "the generator emits malformed records");
    assert_eq!(bronze + dead, 20_000);
    assert_eq!(run.summary.dead_letters["events"] as i64, dead);
    let offsets = scalar(
        &ctx,
        "SELECT count(DISTINCT o) FROM (SELECT _offset AS o FROM bronze.events UNION ALL \
         SELECT CAST(substr(position, 9) AS BIGINT) FROM _dead_letter.events)",
    )
    .await?;
    assert_eq!(offsets, 20_000, "each generator offset exactly once");
    let reasons = scalar(
        &ctx,
        "SELECT count(*) FROM _dead_letter.events WHERE error LIKE '%JSON%' AND raw <> ''",
    )
    .await?;
    assert_eq!(
        reasons, dead,
        "dead letters keep the raw text and the reason"
    );

    // The generator re-sends 1% of events: bronze keeps the copies, silver does not.
    let copies = "SELECT count(*) - count(DISTINCT event_id) FROM";
    assert!(scalar(&ctx, &format!("{copies} bronze.events")).await? > 0);
    assert_eq!(scalar(&ctx, &format!("{copies} silver.events")).await?, 0);

    // Silver and fraud equal their own SQL run as batch queries over the lake; silver's over
    // the bronze rows that were on time (an event behind the watermark of the epoch it
    // arrived in is late, and the dedupe leaves it out, as Spark does).
    let watermarks: Vec<String> = run
        .epochs
        .iter()
        .map(|e| match e.watermark_ms {
            Some(wm) => format!("({}, {wm})", e.epoch),
            None => format!("({}, CAST(NULL AS BIGINT))", e.epoch),
        })
        .collect();
    let on_time = format!(
        "(SELECT b.* FROM bronze.events b JOIN (VALUES {}) AS w(epoch, wm) \
           ON b._epoch = w.epoch \
         WHERE w.wm IS NULL OR CAST(b.event_time AS BIGINT) / 1000 >= w.wm) AS bronze_on_time",
        watermarks.join(", ")
    );
    let late: u64 = run
        .epochs
        .iter()
        .filter_map(|e| e.late_rows.get("silver.events"))
        .sum();
    assert!(late > 0, "the generator's late events were late for silver");
    let silver_sql = stream_query(&example("ecommerce"), "silver.events")?
        .replace("FROM bronze.events", &format!("FROM {on_time}"));
    assert_equals(&ctx, "silver.events", &silver_sql).await?;
    ctx.sql(&format!(
        "CREATE VIEW purchase_signals AS {}",
        stream_query(&example("ecommerce"), "purchase_signals")?
    ))
    .await?;
    assert_equals_oracle(&ctx, "fraud.scores").await?;

    // The rules produce every risk level and silver is partitioned by day.
    let levels = scalar(&ctx, "SELECT count(DISTINCT risk_level) FROM fraud.scores").await?;
    assert!(levels >= 4, "got {levels} risk levels");
    let partitions = std::fs::read_dir(lake.path().join("silver/events"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("event_date="))
        .count();
    assert!(
        partitions >= 2,
        "silver has {partitions} event_date partitions"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_epoch_adds_no_rows() -> Result<(), TestError> {
    let env = &[("EVENTS", "12000"), ("EVENTS_PER_TRIGGER", "4000")];
    let lake = tempfile::tempdir()?;
    let first = run_pipeline(&example("ecommerce"), lake.path(), env).await?;
    assert_eq!(first.epochs.len(), 3);
    let count_all = |ctx: datafusion::prelude::SessionContext| async move {
        let mut counts = Vec::new();
        for t in [
            "bronze.events",
            "silver.events",
            "fraud.scores",
            "_dead_letter.events",
        ] {
            counts.push(scalar(&ctx, &format!("SELECT count(*) FROM {t}")).await?);
        }
        Ok::<_, TestError>(counts)
    };
    let before = count_all(lake_context(lake.path()).await?).await?;

    // Crash after every sink committed epoch 3 but before the commit log recorded it.
    std::fs::remove_file(checkpoint_dir(lake.path(), &example("ecommerce")).join("commits/3"))?;
    let replay = run_pipeline(&example("ecommerce"), lake.path(), env).await?;
    assert_eq!(
        replay.epochs.len(),
        1,
        "only the uncommitted epoch runs again"
    );
    let epoch = &replay.epochs[0];
    assert!(epoch.replayed);
    assert_eq!(epoch.epoch, 3);
    for table in ["bronze.events", "silver.events", "fraud.scores"] {
        assert!(
            epoch.already_committed.contains(&table.to_string()),
            "{table} was written twice"
        );
    }
    let after = count_all(lake_context(lake.path()).await?).await?;
    assert_eq!(before, after);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_without_gap_or_duplicate() -> Result<(), TestError> {
    let per = ("EVENTS_PER_TRIGGER", "4000");
    // Lake A: the generator first has 8000 events, later 16000; Weir is restarted in between.
    let a = tempfile::tempdir()?;
    run_pipeline(&example("ecommerce"), a.path(), &[("EVENTS", "8000"), per]).await?;
    let resumed =
        run_pipeline(&example("ecommerce"), a.path(), &[("EVENTS", "16000"), per]).await?;
    assert_eq!(
        resumed.epochs.first().map(|e| e.epoch),
        Some(3),
        "continues after epoch 2"
    );
    // Lake B: one uninterrupted run.
    let b = tempfile::tempdir()?;
    run_pipeline(&example("ecommerce"), b.path(), &[("EVENTS", "16000"), per]).await?;

    let query = "SELECT * EXCLUDE (ingested_at) FROM bronze.events";
    let rows_a = sorted_rows(&lake_context(a.path()).await?, query).await?;
    let rows_b = sorted_rows(&lake_context(b.path()).await?, query).await?;
    assert!(rows_a.len() > 15_000);
    assert!(
        rows_a == rows_b,
        "restarted run differs from the uninterrupted one"
    );
    Ok(())
}
