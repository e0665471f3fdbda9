//! `weir produce`: writes events to a Kafka topic, from the built-in generator or a JSON-lines
//! file, so a pipeline can be demoed and load-tested without other tools.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir_cli::example_events;
use weir_engine::source::generator::ecommerce::{EcommerceConfig, EcommerceGenerator};

use crate::commands::CliError;

/// What to produce.
#[derive(Debug)]
pub enum ProduceInput {
    /// `--from-generator ecommerce --events N --seed S`, to `--topic`, without keys.
    Ecommerce {
        topic: String,
        events: u64,
        seed: u64,
    },
    /// `--from-generator retail | microservices | clicks`: each message to its kind's topic
    /// (after `prefix`), keyed.
    Example {
        kind: String,
        prefix: String,
        events: u64,
        seed: u64,
    },
    /// `--file F.jsonl`: one message per non-empty line, to `--topic`.
    File { topic: String, path: PathBuf },
}

/// Sends `input` at up to `rate` messages per second (0 = as fast as possible).
pub fn produce(bootstrap: &str, input: ProduceInput, rate: u64) -> Result<(), CliError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .map_err(|e| kafka_error(bootstrap, e))?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut topics = std::collections::BTreeSet::new();
    let mut send = |topic: &str, key: Option<&str>, payload: &[u8]| -> Result<(), CliError> {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: let deliveries drain, then retry the same record.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(kafka_error(bootstrap, e)),
            }
        }
        producer.poll(Duration::ZERO);
        if !topics.contains(topic) {
            topics.insert(topic.to_string());
        }
        sent += 1;
        Ok(())
    };
    match input {
        ProduceInput::Ecommerce {
            topic,
            events,
            seed,
        } => {
            let generator = EcommerceGenerator::new(EcommerceConfig {
                seed,
                ..EcommerceConfig::default()
            });
            let mut buf = Vec::with_capacity(512);
            for i in 0..events {
                buf.clear();
                generator.write_event(i, &mut buf);
                send(&topic, None, &buf)?;
            }
        }
        ProduceInput::Example {
            kind,
            prefix,
            events,
            seed,
        } => {
            let messages = example_events::generate(&kind, events, seed).ok_or_else(|| {
                CliError::Io(std::io::Error::other(format!("no generator `{kind}`")))
            })?;
            for m in messages {
                send(
                    &format!("{prefix}{}", m.topic),
                    Some(&m.key),
                    m.payload.as_bytes(),
                )?;
            }
        }
        ProduceInput::File { topic, path } => {
            let file = std::fs::File::open(&path)?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    send(&topic, None, line.as_bytes())?;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| kafka_error(bootstrap, e))?;
    let secs = started.elapsed().as_secs_f64();
    errln!(
        "weir: produced {sent} messages to {} in {secs:.1}s ({:.0}/s)",
        topics.into_iter().collect::<Vec<_>>().join(", "),
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn kafka_error(bootstrap: &str, e: KafkaError) -> CliError {
    CliError::Io(std::io::Error::other(format!(
        "Kafka at {bootstrap}: {e} (is the broker running, and does the topic exist?)"
    )))
}
