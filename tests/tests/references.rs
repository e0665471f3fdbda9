//! Lookup joins with reference tables (`CREATE REFERENCE TABLE`): a stream enriched from CSV,
//! JSON and Delta reference tables; a reference that changes between epochs is joined at its
//! new version from the next epoch on, and rows already written keep the version they joined.
//! Mistakes name the table, the file and the column.

use std::path::Path;

use weir_tests::{lake_context, plan_sql, run_pipeline, sorted_rows, TestError};

const PIPELINE: &str = "
CREATE SOURCE events (seq BIGINT NOT NULL, user_id TEXT, product_id BIGINT, ts TIMESTAMP)
WITH (connector = 'files', path = '{dir}/events', max_files_per_trigger = 1, settle_time = '0s');

CREATE REFERENCE TABLE users (user_id TEXT NOT NULL, segment TEXT, country TEXT)
WITH (connector = 'csv', path = '{dir}/users.csv');
CREATE REFERENCE TABLE products WITH (connector = 'json', path = '{dir}/products');
CREATE REFERENCE TABLE regions WITH (connector = 'delta', path = '{dir}/lake/regions');

CREATE TABLE enriched AS
SELECT e.seq, e.user_id, u.segment, p.category, r.region
FROM events e
LEFT JOIN users u ON e.user_id = u.user_id
JOIN products p ON e.product_id = p.product_id
LEFT JOIN regions r ON u.country = r.country;
";

/// Writes the pipeline, the first events file and the reference files under `dir`; the
/// `regions` Delta table is written by a first pipeline of its own.
async fn setup(dir: &Path) -> Result<std::path::PathBuf, TestError> {
    std::fs::create_dir_all(dir.join("events"))?;
    std::fs::create_dir_all(dir.join("products"))?;
    std::fs::create_dir_all(dir.join("regions_in"))?;
    std::fs::write(
        dir.join("users.csv"),
        "user_id,segment,country\nann,gold,DE\nbob,basic,US\n",
    )?;
    std::fs::write(
        dir.join("products/a.json"),
        "{\"product_id\": 1, \"category\": \"books\"}\n{\"product_id\": 2, \"category\": \"toys\"}\n",
    )?;
    std::fs::write(
        dir.join("regions_in/0.json"),
        "{\"country\": \"DE\", \"region\": \"EMEA\"}\n{\"country\": \"US\", \"region\": \"AMER\"}\n",
    )?;
    let regions = dir.join("regions.sql");
    std::fs::write(
        &regions,
        format!(
            "CREATE SOURCE r (country TEXT, region TEXT)
             WITH (connector = 'files', path = '{}/regions_in', settle_time = '0s');
             CREATE TABLE regions AS SELECT * FROM r;",
            dir.display()
        ),
    )?;
    run_pipeline(&regions, &dir.join("lake"), &[]).await?;
    let pipeline = dir.join("p.sql");
    std::fs::write(
        &pipeline,
        PIPELINE.replace("{dir}", &dir.display().to_string()),
    )?;
    Ok(pipeline)
}

fn event(seq: u64, user: &str, product: u64) -> String {
    format!(
        "{{\"seq\": {seq}, \"user_id\": \"{user}\", \"product_id\": {product}, \"ts\": \"2024-03-01T10:00:0{seq}Z\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_join_reference_tables_at_the_version_of_their_epoch() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let pipeline = setup(dir.path()).await?;
    let lake = dir.path().join("lake");
    std::fs::write(
        dir.path().join("events/0.json"),
        [
            event(1, "ann", 1),
            event(2, "bob", 2),
            event(3, "cid", 1),
            event(4, "ann", 9),
        ]
        .join("\n"),
    )?;
    run_pipeline(&pipeline, &lake, &[]).await?;
    // Ann moves to another segment, Cid signs up; a second events file arrives.
    std::fs::write(
        dir.path().join("users.csv"),
        "user_id,segment,country\nann,platinum,DE\nbob,basic,US\ncid,new,US\n",
    )?;
    std::fs::write(
        dir.path().join("events/1.json"),
        [event(5, "ann", 2), event(6, "cid", 2)].join("\n"),
    )?;
    run_pipeline(&pipeline, &lake, &[]).await?;

    let ctx = lake_context(&lake).await?;
    let rows = sorted_rows(&ctx, "SELECT * FROM enriched ORDER BY seq").await?;
    // Event 4's product is unknown: the inner join drops it.
    assert_eq!(
        rows,
        vec![
            "1|ann|gold|books|EMEA",
            "2|bob|basic|toys|AMER",
            "3|cid||books|",
            "5|ann|platinum|toys|EMEA",
            "6|cid|new|toys|AMER",
        ]
    );
    Ok(())
}

/// A reference whose file is missing, whose declared column the file lacks, or that is
/// joined on a column it does not have: errors that name the table, file and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_mistakes_name_the_table_file_and_column() -> Result<(), TestError> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("users.csv"), "user_id,segment\nann,gold\n")?;
    let source = "CREATE SOURCE events (user_id TEXT) WITH (connector = 'generator', events = 10);";
    let error_of = |sql: String| async move {
        plan_sql(&format!("{source}\n{sql}"))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let missing = error_of(format!(
        "CREATE REFERENCE TABLE users WITH (connector = 'csv', path = '{d}/nope.csv');"
    ))
    .await;
    assert!(
        missing.contains("reference table `users`") && missing.contains("nope.csv"),
        "{missing}"
    );
    let no_column = error_of(format!(
        "CREATE REFERENCE TABLE users (user_id TEXT, country TEXT)
         WITH (connector = 'csv', path = '{d}/users.csv');
         CREATE TABLE t AS SELECT e.user_id, u.country FROM events e JOIN users u ON e.user_id = u.user_id;"
    ))
    .await;
    assert!(
        no_column.contains("reference table `users`")
            && no_column.contains("users.csv")
            && no_column.contains("no column `country`"),
        "{no_column}"
    );
    let bad_key = error_of(format!(
        "CREATE REFERENCE TABLE users WITH (connector = 'csv', path = '{d}/users.csv');
         CREATE TABLE t AS SELECT e.user_id FROM events e JOIN users u ON e.user_id = u.id;"
    ))
    .await;
    assert!(
        bad_key.contains("u.id") && bad_key.contains("user_id"),
        "{bad_key}"
    );
    let only_reference = error_of(format!(
        "CREATE REFERENCE TABLE users WITH (connector = 'csv', path = '{d}/users.csv');
         CREATE TABLE t AS SELECT * FROM users;"
    ))
    .await;
    assert!(only_reference.contains("and no stream"), "{only_reference}");
    let unknown = error_of(format!(
        "CREATE REFERENCE TABLE users WITH (connector = 'xls', path = '{d}/users.csv');"
    ))
    .await;
    assert!(unknown.contains("csv, delta, json, parquet"), "{unknown}");
    Ok(())
}
