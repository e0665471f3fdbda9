//! What can go wrong between a pipeline and a PostgreSQL server, each with the table, column
//! or server it concerns (host, port and database: never the user's password).

/// A PostgreSQL sink's error.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The `url` option does not parse.
    #[error("option `url`: {reason}")]
    Url {
        /// What is wrong with it (the URL itself is not repeated: it may hold a password).
        reason: String,
    },
    /// The server did not answer within `server_timeout`.
    #[error(
        "PostgreSQL server {place} did not answer for {seconds}s while trying to {what}: {}; \
         check that it is up and reachable (or raise server_timeout). Weir resumes from its \
         checkpoint when restarted",
        server_message(source)
    )]
    Unreachable {
        /// `host:port/database`.
        place: String,
        /// What the connection was for.
        what: String,
        /// How long it was waited for.
        seconds: u64,
        /// The last attempt's error.
        source: tokio_postgres::Error,
    },
    /// The server refused a request.
    #[error("PostgreSQL server {place}: cannot {what}: {}", server_message(source))]
    Server {
        /// `host:port/database`.
        place: String,
        /// What was asked.
        what: String,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
    /// The query gives a column the existing table lacks.
    #[error(
        "PostgreSQL table {table} has no column `{column}`, which the query gives as \
         {arrow_type} ({declared}); add it (ALTER TABLE {table} ADD COLUMN \"{column}\" \
         {declared}) or leave it out of the query"
    )]
    MissingColumn {
        /// The target table.
        table: String,
        /// The column.
        column: String,
        /// The query's type for it.
        arrow_type: String,
        /// The PostgreSQL type a new table would declare.
        declared: String,
    },
    /// An existing column cannot take the query's values.
    #[error(
        "PostgreSQL table {table} column `{column}` is {existing}, but the query gives \
         {arrow_type} ({declared}); cast the column in the query, or change the table's column"
    )]
    ColumnType {
        /// The target table.
        table: String,
        /// The column.
        column: String,
        /// Its type in the table.
        existing: String,
        /// The query's type.
        arrow_type: String,
        /// The PostgreSQL type that type maps to.
        declared: String,
    },
    /// A column of a type no PostgreSQL column takes as it is.
    #[error(
        "table {table} column `{column}` is {arrow_type}, which a PostgreSQL table cannot take \
         as it is; cast it in the query (to TEXT, or a number)"
    )]
    UnsupportedType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its Arrow type.
        arrow_type: String,
    },
    /// The primary key does not match the table.
    #[error("PostgreSQL table {table}: {reason}")]
    PrimaryKey {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A value could not be encoded (a number beyond the column's range).
    #[error("table {table}: cannot encode epoch {epoch}'s rows for PostgreSQL: {source}")]
    Encode {
        /// The table.
        table: String,
        /// The epoch.
        epoch: u64,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
}

impl PostgresError {
    /// A refused request `what` on the server at `place`.
    pub fn server(place: &str, what: &str, source: tokio_postgres::Error) -> Self {
        PostgresError::Server {
            place: place.to_string(),
            what: what.to_string(),
            source,
        }
    }
}

/// The server's message (with its SQLSTATE, detail and hint) rather than the client's generic
/// "db error".
pub fn server_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None if crate::tls::is_tls_failure(error) => format!(
            "{error}: {}; the server's certificate must be signed by a CA of `sslrootcert` (or \
             of the system for verify-ca / verify-full without it), and name the host for \
             verify-full; see the URL's sslmode",
            std::error::Error::source(error).map_or(String::new(), |c| c.to_string())
        ),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}
