//! The `postgres` reference connector: a table or query of a PostgreSQL server read whole as a
//! reference (`CREATE REFERENCE TABLE products WITH (connector = 'postgres', url = '${PG_URL}',
//! table = 'inventory.products', refresh = '1 minute')`).
//!
//! The rows are read again at most once per `refresh`; their version is a hash of what was
//! read, so an unchanged table keeps its version and a changed one gets a new one. The runtime
//! keeps the rows of every version an epoch logged in the checkpoint, so a replay joins what the
//! first attempt joined even after the server's table changed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use tokio::sync::Mutex;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;
use weir_engine::error::{EngineError, Result};
use weir_engine::options::Options;
use weir_engine::reference::{
    conform, reference_error, ReferenceArgs, ReferenceConnector, ReferenceTable,
};

use crate::connect::{url_option_error, Server};
use crate::table::TableName;

/// How often the rows are read again unless `refresh` says otherwise.
const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// The `postgres` reference connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresReferenceConnector;

/// The rows last read, with their version.
#[derive(Debug)]
struct Snapshot {
    version: String,
    rows: Vec<RecordBatch>,
    read_at: Instant,
}

/// A PostgreSQL table or query as a reference.
#[derive(Debug)]
struct PostgresReference {
    table: String,
    server: Server,
    query: String,
    refresh: Duration,
    schema: SchemaRef,
    last: Mutex<Option<Snapshot>>,
}

#[async_trait::async_trait]
impl ReferenceConnector for PostgresReferenceConnector {
    async fn open(
        &self,
        args: ReferenceArgs<'_>,
        options: &mut Options,
    ) -> Result<Arc<dyn ReferenceTable>> {
        let url = options.require_str(
            "url",
            "the server, e.g. url = '${PG_URL}' with PG_URL=postgres://user:password@host/db",
        )?;
        let timeout = options
            .take_duration("server_timeout")?
            .unwrap_or(Duration::from_secs(300));
        let server = Server::parse(&url, timeout).map_err(url_option_error)?;
        let query = match (options.take_str("table"), options.take_str("query")) {
            (Some(table), None) => format!("SELECT * FROM {}", TableName::parse(&table).quoted()),
            (None, Some(query)) => query,
            _ => {
                return Err(EngineError::option(
                    "table",
                    "give the rows as table = 'schema.table' or query = 'SELECT ...' (one of \
                     the two)",
                ))
            }
        };
        let refresh = options.take_duration("refresh")?.unwrap_or(DEFAULT_REFRESH);
        let mut reference = PostgresReference {
            table: args.table.to_string(),
            server,
            query,
            refresh,
            schema: Arc::new(Schema::empty()),
            last: Mutex::new(None),
        };
        reference.schema = match args.declared {
            Some(declared) => declared,
            None => reference.inferred_schema().await?,
        };
        Ok(Arc::new(reference))
    }
}

/// The Arrow type a column of PostgreSQL type `ty` is read as, if Weir reads it.
fn arrow_type(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

/// A `date`, `timestamp` or `timestamptz` as Arrow's number (days or microseconds since 1970).
struct SinceUnixEpoch(i64);

impl<'a> FromSql<'a> for SinceUnixEpoch {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        match *ty {
            Type::DATE => Ok(SinceUnixEpoch(i32::from_sql(ty, raw)? as i64 + 10_957)),
            _ => Ok(SinceUnixEpoch(
                i64::from_be_bytes(raw.try_into()?) + 946_684_800_000_000,
            )),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ)
    }
}

impl PostgresReference {
    fn error(&self, message: impl Into<String>) -> EngineError {
        reference_error(&self.table, &self.describe(), message)
    }

    /// The query's columns, asked from the server (when the statement declares none).
    async fn inferred_schema(&self) -> Result<SchemaRef> {
        let client = self
            .server
            .connect(&format!("read reference table {}", self.table))
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let statement = client
            .prepare(&self.query)
            .await
            .map_err(|e| self.error(crate::error::server_message(&e)))?;
        let fields = statement
            .columns()
            .iter()
            .map(|c| match arrow_type(c.type_()) {
                Some(t) => Ok(Field::new(c.name(), t, true)),
                None => Err(self.error(format!(
                    "column `{}` is {}, which Weir does not read; cast it in the query \
                     (query = 'SELECT ..., {}::text ...') or declare the table's columns",
                    c.name(),
                    c.type_(),
                    c.name()
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Reads every row and its version (a hash of the rows).
    async fn read(&self) -> Result<Snapshot> {
        let client = self
            .server
            .connect(&format!("read reference table {}", self.table))
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let rows = client
            .query(&self.query, &[])
            .await
            .map_err(|e| self.error(crate::error::server_message(&e)))?;
        let batch = self.to_batch(&rows)?;
        // The version: a hash of the rows in Arrow's row format (same rows, same version).
        let mut hasher = DefaultHasher::new();
        let fields = batch
            .schema()
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let encoded = RowConverter::new(fields)
            .and_then(|c| c.convert_columns(batch.columns()))
            .map_err(|e| self.error(e.to_string()))?;
        for row in encoded.iter() {
            row.as_ref().hash(&mut hasher);
        }
        let batches = conform(&self.table, &self.describe(), &self.schema, vec![batch])?;
        Ok(Snapshot {
            version: format!("pg-{:016x}", hasher.finish()),
            rows: batches,
            read_at: Instant::now(),
        })
    }

    /// The rows as one batch of the server's own types (conformed to the schema afterwards).
    fn to_batch(&self, rows: &[Row]) -> Result<RecordBatch> {
        let Some(first) = rows.first() else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, column) in first.columns().iter().enumerate() {
            let ty = column.type_();
            let data_type = arrow_type(ty).ok_or_else(|| {
                self.error(format!(
                    "column `{}` is {ty}, which Weir does not read; cast it in the query",
                    column.name()
                ))
            })?;
            let array = column_array(rows, i, &data_type)
                .map_err(|e| self.error(format!("column `{}`: {e}", column.name())))?;
            fields.push(Field::new(column.name(), data_type, true));
            columns.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| self.error(e.to_string()))
    }
}

/// Column `i` of `rows` as an Arrow array of `data_type`.
fn column_array(
    rows: &[Row],
    i: usize,
    data_type: &DataType,
) -> std::result::Result<ArrayRef, tokio_postgres::Error> {
    macro_rules! build {
        ($builder:expr, $t:ty, $map:expr) => {{
            let mut builder = $builder;
            for row in rows {
                builder.append_option(row.try_get::<_, Option<$t>>(i)?.map($map));
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(match data_type {
        DataType::Boolean => build!(BooleanBuilder::new(), bool, |v| v),
        DataType::Int16 => build!(Int16Builder::new(), i16, |v| v),
        DataType::Int32 => build!(Int32Builder::new(), i32, |v| v),
        DataType::Int64 => build!(Int64Builder::new(), i64, |v| v),
        DataType::Float32 => build!(Float32Builder::new(), f32, |v| v),
        DataType::Float64 => build!(Float64Builder::new(), f64, |v| v),
        DataType::Date32 => build!(Date32Builder::new(), SinceUnixEpoch, |v| v.0 as i32),
        DataType::Timestamp(_, zone) => build!(
            TimestampMicrosecondBuilder::new().with_timezone_opt(zone.clone()),
            SinceUnixEpoch,
            |v| v.0
        ),
        _ => build!(StringBuilder::new(), String, |v| v),
    })
}

#[async_trait::async_trait]
impl ReferenceTable for PostgresReference {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn current_version(&self) -> Result<String> {
        let mut last = self.last.lock().await;
        if let Some(snapshot) = last.as_ref() {
            if snapshot.read_at.elapsed() < self.refresh {
                return Ok(snapshot.version.clone());
            }
        }
        let snapshot = self.read().await?;
        let version = snapshot.version.clone();
        *last = Some(snapshot);
        Ok(version)
    }

    async fn load(&self, version: &str) -> Result<Option<Vec<RecordBatch>>> {
        let last = self.last.lock().await;
        Ok(last
            .as_ref()
            .filter(|s| s.version == version)
            .map(|s| s.rows.clone()))
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL query on {}: {}",
            self.server.place(),
            self.query
        )
    }
}
