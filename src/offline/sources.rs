//! Where `inferd replay` reads the prediction log from: files (plain or gzip, or stdin), the
//! objects under an object-storage prefix, or a PostgreSQL table read in pages, with the
//! model and time range applied in SQL. Each yields readers of JSON lines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{DynObjectStore, ObjectStoreExt};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, ConnectOptions, Row, SqlSafeStr, SqlStr};

use crate::config::is_sql_name;

/// Rows fetched per query from PostgreSQL.
const PAGE_ROWS: i64 = 10_000;

/// What the records are filtered on, in SQL for PostgreSQL (and by replay for every source).
pub struct Filter<'a> {
    pub model: &'a str,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub table: &'a str,
}

enum Source {
    File(PathBuf),
    Object {
        store: Arc<DynObjectStore>,
        path: ObjectPath,
        url: String,
    },
    Table {
        connection: Box<PgConnection>,
        query: SqlStr,
        place: String,
        after: i64,
        model: String,
        since: Option<String>,
        until: Option<String>,
    },
}

pub struct Sources {
    queue: VecDeque<Source>,
    /// Files, objects and tables named.
    pub count: usize,
}

impl Sources {
    /// Resolves each argument: `postgres://` (or `postgresql://`) URLs, object-storage URLs
    /// (`s3://`, `gs://`, `az://`, `file://`: every object under the prefix, in name order),
    /// files, folders (every file in them), globs, and `-` for stdin.
    pub async fn resolve(arguments: &[String], filter: &Filter<'_>) -> Result<Self, String> {
        let mut queue = VecDeque::new();
        for argument in arguments {
            if argument.starts_with("postgres://") || argument.starts_with("postgresql://") {
                queue.push_back(table(argument, filter).await?);
            } else if argument.contains("://") {
                let (store, prefix) =
                    crate::objects::connect(argument, crate::objects::Access::Bucket).map_err(|e| e.to_string())?;
                let mut objects: Vec<ObjectPath> = store
                    .list(Some(&prefix))
                    .map_ok(|meta| meta.location)
                    .try_collect()
                    .await
                    .map_err(|e| format!("cannot list {argument}: {e}"))?;
                objects.sort();
                let base = argument.trim_end_matches('/');
                queue.extend(objects.into_iter().map(|path| {
                    let name = path.as_ref().strip_prefix(prefix.as_ref()).unwrap_or(path.as_ref()).to_owned();
                    Source::Object {
                        store: store.clone(),
                        path,
                        url: format!("{base}/{}", name.trim_start_matches('/')),
                    }
                }));
            } else {
                queue.extend(files(std::slice::from_ref(argument))?.into_iter().map(Source::File));
            }
        }
        let count = queue.len();
        Ok(Self { queue, count })
    }

    /// The next reader and its name for messages; `None` when all are read.
    pub async fn next(&mut self) -> Result<Option<(String, Box<dyn BufRead>)>, String> {
        loop {
            let Some(source) = self.queue.front_mut() else { return Ok(None) };
            match source {
                Source::File(path) => {
                    let path = std::mem::take(path);
                    self.queue.pop_front();
                    let name = if path == Path::new("-") { "stdin".to_owned() } else { path.display().to_string() };
                    let reader = open(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
                    return Ok(Some((name, reader)));
                }
                Source::Object { store, path, url } => {
                    let url = std::mem::take(url);
                    let got = store.get(path).await.map_err(|e| format!("cannot read {url}: {e}"))?;
                    let bytes = got.bytes().await.map_err(|e| format!("cannot read {url}: {e}"))?;
                    self.queue.pop_front();
                    return Ok(Some((url, maybe_gzip(Box::new(Cursor::new(bytes)))?)));
                }
                Source::Table { connection, query, place, after, model, since, until } => {
                    let rows = sqlx::query(query.clone())
                        .bind(*after)
                        .bind(model.as_str())
                        .bind(since.as_deref())
                        .bind(until.as_deref())
                        .bind(PAGE_ROWS)
                        .fetch_all(&mut **connection)
                        .await
                        .map_err(|e| format!("cannot read {place}: {e}"))?;
                    let Some(last) = rows.last() else {
                        self.queue.pop_front();
                        continue;
                    };
                    *after = last.get::<i64, _>(0);
                    let mut text = String::new();
                    for row in &rows {
                        text.push_str(row.get::<&str, _>(1));
                        text.push('\n');
                    }
                    let name = format!("{place} (from id {})", rows[0].get::<i64, _>(0));
                    return Ok(Some((name, Box::new(Cursor::new(text.into_bytes())))));
                }
            }
        }
    }
}

/// A table of the PostgreSQL sink, read from its first row on.
async fn table(url: &str, filter: &Filter<'_>) -> Result<Source, String> {
    if !is_sql_name(filter.table) {
        return Err(format!("--table {:?} is not a table name", filter.table));
    }
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|_| "the PostgreSQL URL cannot be read".to_owned())?;
    let place = format!(
        "postgres {}:{}/{} table {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(""),
        filter.table
    );
    let connection = options.connect().await.map_err(|e| format!("cannot connect to {place}: {e}"))?;
    let table = filter.table;
    // The record as the files hold it (jsonb orders keys its own way; replay reads by name).
    let query = AssertSqlSafe(format!(
        "SELECT id, jsonb_build_object('ts', ts, 'request_id', request_id, 'principal', principal, 'model', model, \
         'version', version, 'instance', instance, 'inputs', inputs, 'outputs', outputs, 'batch_size', batch_size, \
         'queue_ms', queue_ms, 'inference_ms', inference_ms)::text FROM {table} \
         WHERE id > $1 AND model = $2 AND ($3::text IS NULL OR ts >= $3::text::timestamptz) \
         AND ($4::text IS NULL OR ts < $4::text::timestamptz) ORDER BY id LIMIT $5"
    ))
    .into_sql_str();
    Ok(Source::Table {
        connection: Box::new(connection),
        query,
        place,
        after: 0,
        model: filter.model.to_owned(),
        since: filter.since.map(str::to_owned),
        until: filter.until.map(str::to_owned),
    })
}

/// The log files named: files, folders (every file in them), globs, in name order; `-` is
/// stdin.
pub fn files(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        if pattern == "-" {
            out.push(path.to_owned());
        } else if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {pattern}: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inside.sort();
            out.extend(inside);
        } else if path.is_file() {
            out.push(path.to_owned());
        } else {
            let matched = glob::glob(pattern).map_err(|e| format!("{pattern}: {e}"))?;
            let before = out.len();
            out.extend(matched.filter_map(Result::ok).filter(|p| p.is_file()));
            if out.len() == before {
                return Err(format!("{pattern}: no such file, folder or matching files"));
            }
        }
    }
    Ok(out)
}

/// The file's text, gunzipped when it is gzip: by its `.gz` name, or its first bytes (stdin).
fn open(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let input: Box<dyn Read> =
        if path == Path::new("-") { Box::new(std::io::stdin()) } else { Box::new(std::fs::File::open(path)?) };
    if path.extension().is_some_and(|e| e == "gz") {
        let input = BufReader::with_capacity(1 << 16, input);
        return Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(input))));
    }
    maybe_gzip(input).map_err(std::io::Error::other)
}

/// Gunzipped when its first bytes say gzip.
fn maybe_gzip(input: Box<dyn Read>) -> Result<Box<dyn BufRead>, String> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let gzip = input.fill_buf().map_err(|e| e.to_string())?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    })
}
