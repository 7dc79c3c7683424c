//! The PostgreSQL sink: each chunk of lines becomes multi-row INSERTs (one statement per
//! `batch_rows`, the lines passed as one JSON array that the server spreads into typed columns).
//! Runs on the writer thread, on a small runtime of its own. A failed connect or statement
//! drops the connection; the next attempt waits a backoff, and the writer holds the lines
//! meanwhile. Lines still unsent at exit are saved in `directory` and sent first at the next
//! start.
//!
//! The table is created when missing. One made before the `trace_id` column existed gains it
//! at connect; when that cannot be done (the table belongs to another role, or a long query
//! holds it), rows go in without their trace id and a warning says why.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use metrics::{counter, Counter};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, SqlSafeStr, SqlStr};
use time::OffsetDateTime;

use super::sink::{OnFailure, Sink, Written};
use crate::config::PredictionLogConfig;
use crate::observe::PREDICTION_LOG_SINK_ERRORS_TOTAL;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const UNSENT_PREFIX: &str = "unsent-";
const UNSENT_SUFFIX: &str = ".jsonl";

/// The columns, in the line's field order; the line's keys are these names.
const COLUMNS: &str = "ts, request_id, principal, trace_id, model, version, instance, inputs, outputs, batch_size, \
                       queue_ms, inference_ms";
/// The same without `trace_id`, for a table made before that column that cannot gain it.
const COLUMNS_UNTRACED: &str =
    "ts, request_id, principal, model, version, instance, inputs, outputs, batch_size, queue_ms, inference_ms";

/// How long adding `trace_id` to an older table may wait for its lock: a waiting `ALTER TABLE`
/// would hold up every other query on the table behind it.
const ALTER_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

pub struct Postgres {
    options: PgConnectOptions,
    /// `host:port/database`, for the service log.
    place: String,
    /// Built from the validated table name (letters, digits, `_`, one `.`).
    create: [SqlStr; 2],
    trace_column: TraceColumn,
    /// The insert with `trace_id`, and the one without it.
    inserts: [SqlStr; 2],
    /// Whether the connected table has `trace_id` (which insert is used).
    traced: bool,
    batch_rows: usize,
    timeout: Duration,
    max_bytes: usize,
    directory: PathBuf,
    /// Made on the writer thread at the first write (a runtime may not be dropped on another
    /// runtime's thread, as an `open` that fails later would do).
    runtime: Option<tokio::runtime::Runtime>,
    connection: Option<PgConnection>,
    backoff: Duration,
    next_attempt: Option<Instant>,
    /// After `closing`: no statement may run past this.
    by: Option<Instant>,
    errors: Counter,
}

impl Postgres {
    pub fn open(config: &PredictionLogConfig) -> io::Result<Self> {
        let pg = &config.postgres;
        let options = PgConnectOptions::from_str(&pg.url)
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "prediction_log.postgres.url is not a postgres:// URL")
            })?
            .application_name("inferd")
            .log_statements(tracing::log::LevelFilter::Off);
        let place = format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or(""));
        let table = &pg.table;
        let index = format!("{}_model_ts", table.rsplit('.').next().unwrap_or(table));
        fs::create_dir_all(&config.directory)?;
        Ok(Self {
            options,
            place,
            create: [
                sql(format!(
                    "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, \
                     request_id text NOT NULL, principal text, trace_id text, model text NOT NULL, \
                     version text NOT NULL, instance integer NOT NULL, inputs jsonb NOT NULL, \
                     outputs jsonb NOT NULL, batch_size integer NOT NULL, queue_ms double precision NOT NULL, \
                     inference_ms double precision NOT NULL)"
                )),
                sql(format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (model, ts)")),
            ],
            trace_column: TraceColumn {
                present: sql(format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{table}'::regclass \
                     AND attname = 'trace_id' AND NOT attisdropped)"
                )),
                add: sql(format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS trace_id text")),
            },
            inserts: [COLUMNS, COLUMNS_UNTRACED].map(|columns| {
                sql(format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} \
                     FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb)"
                ))
            }),
            traced: true,
            batch_rows: pg.batch_rows,
            timeout: Duration::from_millis(pg.timeout_ms),
            max_bytes: usize::try_from(pg.buffer_bytes).unwrap_or(usize::MAX),
            directory: config.directory.clone(),
            runtime: None,
            connection: None,
            backoff: FIRST_BACKOFF,
            next_attempt: None,
            by: None,
            errors: counter!(PREDICTION_LOG_SINK_ERRORS_TOTAL),
        })
    }

    /// The statement timeout, shortened to what is left before the close deadline.
    fn limit(&self) -> Duration {
        match self.by {
            Some(by) => self.timeout.min(by.saturating_duration_since(Instant::now())),
            None => self.timeout,
        }
    }

    /// A connection with the table in place and earlier runs' unsent lines sent; `Err` while
    /// the backoff after a failure lasts.
    fn connection(&mut self) -> io::Result<&mut PgConnection> {
        if self.connection.is_none() {
            if self.next_attempt.is_some_and(|at| Instant::now() < at) {
                return Err(io::Error::other("waiting to reconnect to PostgreSQL"));
            }
            let connected = self.connect();
            let (connection, traced) = self.settle(connected)?;
            self.traced = traced;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    /// A connection with the table ready, and whether the table has `trace_id`.
    fn connect(&mut self) -> io::Result<(PgConnection, bool)> {
        let limit = self.limit();
        let runtime = self.runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
        });
        let unsent = unsent_files(&self.directory);
        let (options, create, trace_column, batch_rows) =
            (&self.options, &self.create, &self.trace_column, self.batch_rows);
        let inserts = &self.inserts;
        runtime.block_on(async {
            let work = async {
                let mut connection = options.connect().await?;
                for statement in create {
                    sqlx::query(statement.clone()).execute(&mut connection).await?;
                }
                let traced = trace_column.ensure(&mut connection).await?;
                let insert = &inserts[usize::from(!traced)];
                for file in &unsent {
                    send_unsent(&mut connection, insert, batch_rows, file).await?;
                }
                Ok::<_, sqlx::Error>((connection, traced))
            };
            timed(limit, work).await
        })
    }

    /// Counts a failure and sets the backoff before the next attempt; resets it on success.
    fn settle<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Ok(_) => {
                self.backoff = FIRST_BACKOFF;
                self.next_attempt = None;
            }
            Err(_) => {
                self.connection = None;
                self.errors.increment(1);
                self.next_attempt = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        result
    }

    fn insert(&mut self, json: &str) -> io::Result<()> {
        let limit = self.limit();
        let (runtime, connection) = (self.runtime.as_ref(), self.connection.as_mut());
        let (Some(runtime), Some(connection)) = (runtime, connection) else {
            return Err(io::Error::other("not connected"));
        };
        let insert = self.inserts[usize::from(!self.traced)].clone();
        let result = runtime.block_on(timed(limit, sqlx::query(insert).bind(json).execute(connection)));
        self.settle(result.map(drop))
    }
}

impl Sink for Postgres {
    fn write(&mut self, buf: &[u8], ends: &[usize], _now: OffsetDateTime) -> Written {
        let mut done = Written { lines: 0, bytes: 0, error: None };
        if let Err(error) = self.connection() {
            done.error = Some(error);
            return done;
        }
        let mut json = String::new();
        for chunk in ends.chunks(self.batch_rows) {
            let end = *chunk.last().expect("chunks are not empty");
            json_array(&mut json, &buf[done.bytes..end]);
            if let Err(error) = self.insert(&json) {
                done.error = Some(error);
                break;
            }
            done.lines += chunk.len();
            done.bytes = end;
        }
        done
    }

    fn describe(&self) -> String {
        format!("postgres {}", self.place)
    }

    fn start(&mut self) {
        match self.connection() {
            Ok(_) => tracing::info!(sink = %self.describe(), "the prediction log writes to PostgreSQL"),
            Err(error) => {
                tracing::error!(%error, sink = %self.describe(), "cannot connect to the prediction log's PostgreSQL yet; lines wait and are retried")
            }
        }
    }

    fn on_failure(&self) -> OnFailure {
        OnFailure::Hold { max_bytes: self.max_bytes }
    }

    fn closing(&mut self, by: Instant) {
        self.by = Some(by);
        // No backoff wait at the end: one more try each retry.
        self.next_attempt = None;
    }

    fn spill(&mut self, buf: &[u8], ends: &[usize]) -> io::Result<bool> {
        let end = ends.last().copied().unwrap_or(0);
        let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{UNSENT_PREFIX}{stamp}-{}{UNSENT_SUFFIX}", std::process::id());
        let mut file = fs::File::create(self.directory.join(name))?;
        file.write_all(&buf[..end])?;
        file.sync_all()?;
        Ok(true)
    }
}

/// The statements that check for the `trace_id` column and add it.
struct TraceColumn {
    present: SqlStr,
    add: SqlStr,
}

impl TraceColumn {
    /// Whether the table has `trace_id`, adding it to a table made before it. `false` when the
    /// column is missing and cannot be added now: the table is another role's (adding a column
    /// takes its owner) or its lock was not had within [`ALTER_LOCK_TIMEOUT`].
    async fn ensure(&self, connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
        let present: bool = sqlx::query_scalar(self.present.clone()).fetch_one(&mut *connection).await?;
        if present {
            return Ok(true);
        }
        let mut transaction = connection.begin().await?;
        sqlx::query(ALTER_LOCK_TIMEOUT).execute(&mut *transaction).await?;
        match sqlx::query(self.add.clone()).execute(&mut *transaction).await {
            Ok(_) => {
                transaction.commit().await?;
                tracing::info!("added the column trace_id to the prediction log's table");
                Ok(true)
            }
            Err(error) if cannot_add_now(&error) => {
                transaction.rollback().await?;
                tracing::warn!(%error, "the prediction log's table has no trace_id column and it cannot be added: rows go in without their trace id");
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

/// Not the owner of the table (`insufficient_privilege`), or its lock not had in time
/// (`lock_not_available`).
fn cannot_add_now(error: &sqlx::Error) -> bool {
    let code = error.as_database_error().and_then(|e| e.code());
    matches!(code.as_deref(), Some("42501" | "55P03"))
}

/// SQL text built from the validated table name: nothing a client sends reaches it.
fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// `[line,line,...]` from newline-ended JSON lines (a newline never occurs inside a line: JSON
/// strings escape it).
fn json_array(out: &mut String, lines: &[u8]) {
    out.clear();
    out.push('[');
    for (i, line) in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        // The writer builds the lines as UTF-8 JSON; an earlier run's file is read lossily.
        out.push_str(&String::from_utf8_lossy(line));
    }
    out.push(']');
}

async fn timed<T>(limit: Duration, work: impl std::future::Future<Output = Result<T, sqlx::Error>>) -> io::Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(io::Error::other(error)),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "PostgreSQL did not answer in time")),
    }
}

/// Earlier runs' unsent lines in `dir`, oldest first.
fn unsent_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(UNSENT_PREFIX) && n.ends_with(UNSENT_SUFFIX))
        })
        .collect();
    files.sort();
    files
}

/// Sends one file of unsent lines in one transaction, then deletes it.
async fn send_unsent(
    connection: &mut PgConnection,
    insert: &SqlStr,
    batch_rows: usize,
    file: &Path,
) -> Result<(), sqlx::Error> {
    let text = fs::read(file)?;
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines: Vec<&[u8]> = text[..whole].split_inclusive(|&b| b == b'\n').collect();
    let mut transaction = connection.begin().await?;
    let mut json = String::new();
    for chunk in lines.chunks(batch_rows) {
        json_array(&mut json, &chunk.concat());
        sqlx::query(insert.clone()).bind(&json).execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    fs::remove_file(file)?;
    tracing::info!(file = %file.display(), lines = lines.len(), "sent the prediction log lines an earlier run kept");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_one_json_array() {
        let mut out = String::new();
        json_array(&mut out, b"{\"a\":1}\n{\"a\":\"x}\\n{\"}\n");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value, serde_json::json!([{"a": 1}, {"a": "x}\n{"}]));
        json_array(&mut out, b"{\"a\":1}\n");
        assert_eq!(out, "[{\"a\":1}]");
    }
}
