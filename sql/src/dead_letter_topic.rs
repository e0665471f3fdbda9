//! `dead_letter_topic = 'dlq.events'` on a Kafka source: the source's dead letters are also
//! sent to a Kafka topic. The option is shorthand for a table the planner adds to the pipeline,
//! `_dead_letter_topic.<source>`, reading the source's dead-letter stream and written by the
//! Kafka sink, one JSON message per dead letter keyed like the original record:
//!
//! ```sql
//! CREATE TABLE "_dead_letter_topic.events" WITH (connector = 'kafka', topic = 'dlq.events',
//!     bootstrap.servers = <the source's>, key = 'key') AS
//! SELECT _topic AS topic, _partition AS partition, _offset AS offset, _key AS key,
//!        _kafka_timestamp AS timestamp, error, raw AS payload, source, epoch, position,
//!        "table", event_time, watermark
//! FROM "_dead_letter.events";
//! ```
//!
//! A user who wants another message shape writes such a table themselves.

use std::path::PathBuf;

use crate::error::SqlError;
use crate::parser::PipelineFile;
use crate::statements::{SourceStatement, Statement};

/// The option that names the topic.
pub(crate) const DEAD_LETTER_TOPIC: &str = "dead_letter_topic";

/// The name of the table that sends `source`'s dead letters to its topic.
pub fn dead_letter_topic_table(source: &str) -> String {
    format!("_dead_letter_topic.{source}")
}

/// Source options handed on to the producer: the brokers and how to reach them.
const PRODUCER_OPTION_PREFIXES: [&str; 4] = [
    "bootstrap.servers",
    "kafka.security.",
    "kafka.sasl.",
    "kafka.ssl.",
];

/// A pipeline file holding the table of each source of `statements` that has a
/// `dead_letter_topic`; errors for the option on a source that is not Kafka.
pub(crate) fn dead_letter_topic_files(
    statements: &[(&PipelineFile, Statement)],
) -> Result<Vec<PipelineFile>, Vec<SqlError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for (file, stmt) in statements {
        let Statement::Source(source) = stmt else {
            continue;
        };
        let Some(topic) = source.options.iter().find(|o| o.key == DEAD_LETTER_TOPIC) else {
            continue;
        };
        let connector = source
            .options
            .iter()
            .find(|o| o.key == "connector")
            .map(|o| o.value.to_ascii_lowercase());
        if connector.as_deref() != Some("kafka") {
            errors.push(
                file.error(
                    topic.key_span,
                    format!(
                        "`{DEAD_LETTER_TOPIC}` needs a Kafka source; `{}` is not one",
                        source.name
                    ),
                )
                .with_hint(format!(
                    "its dead letters are in the table `_dead_letter/{0}` and the stream \
                     `_dead_letter.{0}`: a table with connector = 'kafka' can read that stream",
                    source.name
                )),
            );
            continue;
        }
        files.push(PipelineFile {
            path: PathBuf::from(format!(
                "{} ({DEAD_LETTER_TOPIC} of source `{}`)",
                file.path.display(),
                source.name
            )),
            text: table_sql(source, &topic.value),
        });
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// The `CREATE TABLE` statement sending `source`'s dead letters to `topic`.
fn table_sql(source: &SourceStatement, topic: &str) -> String {
    let mut options = vec![
        "connector = 'kafka'".to_string(),
        format!("topic = {}", string(topic)),
        "key = 'key'".to_string(),
    ];
    for o in &source.options {
        if PRODUCER_OPTION_PREFIXES
            .iter()
            .any(|p| o.key == *p || (p.ends_with('.') && o.key.starts_with(p)))
        {
            options.push(format!("{} = {}", string(&o.key), string(&o.value)));
        }
    }
    format!(
        "CREATE TABLE {} WITH ({}) AS\n\
         SELECT _topic AS topic, _partition AS \"partition\", _offset AS \"offset\", \
         _key AS \"key\", _kafka_timestamp AS \"timestamp\", error, raw AS payload, source, \
         epoch, position, \"table\", event_time, watermark\n\
         FROM {};\n",
        qualified("_dead_letter_topic", &source.name),
        options.join(", "),
        qualified("_dead_letter", &source.name),
    )
}

/// `text` as a SQL string literal.
fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `prefix.name` with `name` quoted (it keeps its case and any character).
fn qualified(prefix: &str, name: &str) -> String {
    format!("{prefix}.\"{}\"", name.replace('"', "\"\""))
}
