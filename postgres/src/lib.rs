//! PostgreSQL ends of Weir pipelines.
//!
//! - `sink`: `CREATE TABLE ... WITH (connector = 'postgres', ...)`, each epoch written exactly
//!   once in one transaction with a row of the commit table (`write`), loaded by binary COPY
//!   (`copy`), appended or upserted on a primary key; the table created or checked before the
//!   first epoch (`table`), Arrow types mapped to PostgreSQL's (`types`).
//! - `reference`: `CREATE REFERENCE TABLE ... WITH (connector = 'postgres', ...)`, a table or
//!   query read whole, again at most once per `refresh`, versioned by a hash of its rows.
//! - `connect`: the server URL (its password never printed) and waiting out a server that is
//!   down or restarting, as the Kafka source waits for its brokers; `tls`: libpq's `sslmode`
//!   and `sslrootcert` over rustls.

pub mod connect;
pub mod copy;
pub mod error;
pub mod reference;
pub mod sink;
pub mod table;
pub mod tls;
pub mod types;
pub mod write;

pub use reference::PostgresReferenceConnector;
pub use sink::PostgresSinkConnector;
