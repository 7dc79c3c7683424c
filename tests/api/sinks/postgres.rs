//! `sink = "postgres"` on a throwaway cluster: typed rows in `inferd_predictions`, none lost
//! across a restart mid-load; an outage past `stall_ms` is a 503 and an unready instance, not a
//! hang, and every answered row arrives once the database is back; `inferd replay
//! postgres://...` reads the rows back; a traced request's row holds its trace id, and a table
//! made before that column gains it.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use super::pg_cluster::PgCluster;
use super::{assert_same_ids, config, ok_ids, replay, statuses, Answer, Load, SinkServer};
use crate::helpers::{eventually, metric, schema_example};

/// Rows in `table`; `None` while the database or the table is not there.
async fn rows(url: &str, table: &str) -> Option<i64> {
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let sql = format!("select count(*) from {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.ok()
}

/// Every request id in `table`, repeats included.
async fn request_ids(cluster: &PgCluster, table: &str) -> Vec<String> {
    let mut conn = cluster.connect().await;
    let sql = format!("select request_id from {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap()
}

/// Waits until `table` holds `want` rows.
async fn wait_for_rows(cluster: &PgCluster, table: &str, want: usize, within: Duration) {
    let url = cluster.url();
    eventually(within, &format!("{want} rows in {table}"), || async { rows(&url, table).await == Some(want as i64) })
        .await;
}

fn postgres_config(dir: &std::path::Path, server: &str, keys: &str, postgres: &str) -> std::path::PathBuf {
    config(
        dir,
        server,
        &format!(
            "sink = \"postgres\"\ndirectory = \"{}\"\n{keys}\n\n[prediction_log.postgres]\n{postgres}\n",
            dir.join("unsent").display()
        ),
    )
}

async fn metrics(server: &SinkServer) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_load_loses_no_answered_row() {
    restart_mid_load("").await;
}

/// The same with each answer waiting for its row's commit (`acknowledge = "written"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_load_loses_no_committed_row() {
    restart_mid_load("acknowledge = \"written\"").await;
}

/// 16 clients of 1-row requests; `pg_ctl restart -m fast` once rows are coming in; every
/// answer 200 and its row in the table, once, typed.
async fn restart_mid_load(keys: &str) {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        keys,
        &format!("url = \"{}\"\ntimeout_ms = 2000\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let load = Load::start(&server.base, 16, "pg", None);
    let url = cluster.url();
    eventually(Duration::from_secs(30), "rows reach the table before the restart", || async {
        rows(&url, "inferd_predictions").await.is_some_and(|n| n >= 500)
    })
    .await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| cluster.restart());
    let restart = restarting.elapsed();
    // The load goes on until rows answered after the restart are in as well.
    let before = rows(&url, "inferd_predictions").await.expect("the table is there after the restart");
    eventually(Duration::from_secs(30), "rows reach the table after the restart", || async {
        rows(&url, "inferd_predictions").await.is_some_and(|n| n >= before + 1000)
    })
    .await;
    let answers = load.finish().await;
    let answered = ok_ids(&answers);
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    println!(
        "{keys}: {} answers {:?} with a PostgreSQL restart ({restart:?}) in the middle; slowest {slowest:?}",
        answers.len(),
        statuses(&answers)
    );
    assert_eq!(
        answered.len(),
        answers.len(),
        "a restart of a few hundred ms is within the buffer: every request answered 200, got {:?}",
        statuses(&answers)
    );

    wait_for_rows(&cluster, "inferd_predictions", answered.len(), Duration::from_secs(30)).await;
    assert_same_ids(request_ids(&cluster, "inferd_predictions").await, &answered, "rows in inferd_predictions");

    // Typed columns, jsonb inputs and outputs, and the index on (model, ts).
    let mut conn = cluster.connect().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select column_name::text, data_type::text from information_schema.columns \
         where table_name = 'inferd_predictions' order by ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let want = [
        ("id", "bigint"),
        ("ts", "timestamp with time zone"),
        ("request_id", "text"),
        ("principal", "text"),
        ("trace_id", "text"),
        ("model", "text"),
        ("version", "text"),
        ("instance", "integer"),
        ("inputs", "jsonb"),
        ("outputs", "jsonb"),
        ("batch_size", "integer"),
        ("queue_ms", "double precision"),
        ("inference_ms", "double precision"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(c, t)| (c.to_string(), t.to_string())).collect();
    assert_eq!(columns, want, "the table's columns and types");
    let id_default: Option<String> = sqlx::query_scalar(
        "select column_default::text from information_schema.columns \
         where table_name = 'inferd_predictions' and column_name = 'id'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(id_default.is_some_and(|d| d.starts_with("nextval(")), "id is a bigserial");
    let primary: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.table_constraints \
         where table_name = 'inferd_predictions' and constraint_type = 'PRIMARY KEY'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(primary, 1, "id is the primary key");
    let index: Option<String> = sqlx::query_scalar(
        "select indexdef::text from pg_indexes where tablename = 'inferd_predictions' \
         and indexname = 'inferd_predictions_model_ts'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    let index = index.expect("an index inferd_predictions_model_ts");
    assert!(index.contains("(model, ts)"), "{index}");

    // Every row holds what a log line holds, typed.
    let well_formed: i64 = sqlx::query_scalar(
        "select count(*) from inferd_predictions where model = 'house_price' and version = '1' \
         and instance = 0 and principal is null and batch_size >= 1 and queue_ms >= 0 and inference_ms >= 0 \
         and ts > now() - interval '10 minutes' and ts <= now() \
         and jsonb_typeof(inputs) = 'object' and jsonb_typeof(inputs -> 'lotsize') = 'number' \
         and jsonb_typeof(inputs -> 'driveway') = 'string' and jsonb_typeof(outputs -> 'price') = 'number'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(well_formed, answered.len() as i64, "rows with every column filled and typed");
    drop(conn);

    let text = metrics(&server).await;
    let lines = metric(&text, "inferd_prediction_log_lines_total", &[]);
    assert_eq!(lines, Some(answered.len() as f64), "lines the sink took durably");
    println!("sink errors counted: {:?}", metric(&text, "inferd_prediction_log_sink_errors_total", &[]));

    let (code, took) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    println!("exit {took:?} after SIGTERM");
}

/// A 1-row `/predict` sent alone, with its answer's status and time.
async fn probe(client: &reqwest::Client, server: &SinkServer, id: &str) -> Answer {
    let started = Instant::now();
    let response = client
        .post(server.url("/predict"))
        .header("x-request-id", id)
        .json(&serde_json::json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .expect("answered while PostgreSQL is down");
    let status = response.status().as_u16();
    if status == 503 {
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string() && error["error_type"].is_string(), "the one error shape: {error}");
    }
    Answer { id: id.to_owned(), status, took: started.elapsed() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_past_stall_ms_is_503_and_unready_then_every_answered_row_arrives() {
    const DEADLINE: Duration = Duration::from_millis(2000);
    // What an answer may take past its deadline on 2 busy cores.
    const SLACK: Duration = Duration::from_millis(1500);
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        &format!("shutdown_grace_seconds = 10\nrequest_timeout_ms = {}", DEADLINE.as_millis()),
        "stall_ms = 500\nbuffer_requests = 4",
        &format!("url = \"{}\"\ntimeout_ms = 1000\nbuffer_bytes = 65536\nbatch_rows = 100\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut answers = Load::start(&server.base, 4, "up", Some(40)).done().await;
    assert_eq!(ok_ids(&answers).len(), 40, "{:?}", statuses(&answers));
    wait_for_rows(&cluster, "inferd_predictions", 40, Duration::from_secs(30)).await;

    tokio::task::block_in_place(|| cluster.stop());
    let stopped = Instant::now();
    let load = Load::start(&server.base, 8, "down", None);
    eventually(Duration::from_secs(15), "/ready answers 503 while PostgreSQL is down", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 503
    })
    .await;
    println!("/ready 503 {:?} after PostgreSQL stopped", stopped.elapsed());
    let mut n = 0;
    eventually(Duration::from_secs(15), "a /predict answered 503 while PostgreSQL is down", async || {
        n += 1;
        let answer = probe(&client, &server, &format!("probe-{n}")).await;
        assert!(answer.took < DEADLINE + SLACK, "an answer past its deadline: {answer:?}");
        assert!([200, 503].contains(&answer.status), "{answer:?}");
        let refused = answer.status == 503;
        answers.push(answer);
        refused
    })
    .await;
    let down = load.finish().await;
    println!("while PostgreSQL was down: {:?}", statuses(&down));
    for answer in &down {
        assert!([200, 503].contains(&answer.status), "200 or 503 while PostgreSQL is down: {answer:?}");
        assert!(answer.took < DEADLINE + SLACK, "an answer past its deadline: {answer:?}");
    }
    answers.extend(down);
    let text = metrics(&server).await;
    let errors = metric(&text, "inferd_prediction_log_sink_errors_total", &[]);
    assert!(errors.is_some_and(|n| n >= 1.0), "failed connects are counted: {errors:?}");

    tokio::task::block_in_place(|| cluster.start_again());
    let started = Instant::now();
    eventually(Duration::from_secs(60), "/ready answers 200 once PostgreSQL is back", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 200
    })
    .await;
    println!("/ready 200 {:?} after PostgreSQL started again", started.elapsed());
    let after = Load::start(&server.base, 4, "again", Some(40)).done().await;
    assert_eq!(ok_ids(&after).len(), 40, "{:?}", statuses(&after));
    answers.extend(after);

    let answered = ok_ids(&answers);
    wait_for_rows(&cluster, "inferd_predictions", answered.len(), Duration::from_secs(30)).await;
    assert_same_ids(request_ids(&cluster, "inferd_predictions").await, &answered, "rows after the outage");
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
}

/// Heroku's convention: no `url`, `DATABASE_URL` (with an `sslmode`) names the database; a
/// table of another name; `inferd replay postgres://...` reads it back, filtered in SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_reads_the_rows_back_from_postgres() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(dir.path(), "shutdown_grace_seconds = 10", "", "table = \"replayed\"\n");
    // A password (trust authentication takes any), which must show in no log line.
    let with_password = cluster.url().replace("postgres@", "postgres:hunter2-secret@");
    let env = [("DATABASE_URL".to_owned(), format!("{with_password}?sslmode=disable"))];
    let mut server = SinkServer::start(&config, &env);
    let answers = Load::start(&server.base, 4, "replay", Some(64)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 64, "{:?}", statuses(&answers));
    // SIGTERM at once: the graceful stop inserts whatever is still queued before the exit.
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(rows(&cluster.url(), "replayed").await, Some(64), "every row in by the exit");
    assert_same_ids(request_ids(&cluster, "replayed").await, &answered, "rows in the table named by `table`");
    let stderr = server.stderr();
    assert_eq!(code, Some(0), "{stderr}");
    let leaks: Vec<String> = server
        .stdout_after_exit()
        .into_iter()
        .chain(stderr.lines().map(str::to_owned))
        .filter(|l| l.contains("hunter2"))
        .collect();
    assert!(leaks.is_empty(), "the database password is logged: {leaks:?}");

    let url = cluster.url();
    let report = replay(&[&url, "--table", "replayed"], &[]);
    assert_eq!(report["lines"], 64, "{report}");
    assert_eq!(report["replayed"], 64, "{report}");
    assert_eq!(report["identical"], 64, "{report}");
    assert_eq!(report["different"], 0, "{report}");
    let report = replay(&[&url, "--table", "replayed", "--model", "house_price_linear"], &[]);
    assert_eq!(report["lines"], 0, "--model in SQL: {report}");
    let report = replay(&[&url, "--table", "replayed", "--since", "2999-01-01T00:00:00Z"], &[]);
    assert_eq!(report["lines"], 0, "--since in SQL: {report}");
    let report = replay(&[&url, "--table", "replayed", "--until", "2000-01-01T00:00:00Z"], &[]);
    assert_eq!(report["lines"], 0, "--until in SQL: {report}");
    let report =
        replay(&[&url, "--table", "replayed", "--model", "house_price", "--since", "2000-01-01T00:00:00Z"], &[]);
    assert_eq!(report["replayed"], 64, "{report}");

    // Past replay's page of 10,000 rows (it reads by id, page by page): the same rows 200 times.
    let mut conn = cluster.connect().await;
    sqlx::query(
        "insert into replayed (ts, request_id, principal, model, version, instance, inputs, outputs, batch_size, \
         queue_ms, inference_ms) select ts, request_id || '-' || n, principal, model, version, instance, inputs, \
         outputs, batch_size, queue_ms, inference_ms from replayed, generate_series(1, 199) as n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let report = replay(&[&url, "--table", "replayed"], &[]);
    assert_eq!(report["lines"], 64 * 200, "every row once, across pages: {report}");
    assert_eq!(report["identical"], 64 * 200, "{report}");
}

/// Lines PostgreSQL could not take before exit are kept in `directory` and sent by the next
/// start: an answered prediction's row survives the database and the server both going down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lines_unsent_at_exit_are_sent_by_the_next_start() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        "shutdown_grace_seconds = 3",
        "",
        &format!("url = \"{}\"\ntimeout_ms = 1000\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let mut answers = Load::start(&server.base, 2, "before", Some(10)).done().await;
    wait_for_rows(&cluster, "inferd_predictions", 10, Duration::from_secs(30)).await;
    tokio::task::block_in_place(|| cluster.stop());
    // 20 lines wait well within buffer_bytes: answered 200, held for the database.
    let held = Load::start(&server.base, 1, "held", Some(20)).done().await;
    assert_eq!(ok_ids(&held).len(), 20, "held within buffer_bytes: {:?}", statuses(&held));
    answers.extend(held);
    let (code, took) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(3 + 2)));
    println!("exit {took:?} after SIGTERM with PostgreSQL down");
    assert_eq!(code, Some(0), "{}", server.stderr());
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("unsent")).unwrap().flatten().map(|e| e.path()).collect();
    let kept_lines: usize =
        kept.iter().map(|p| std::fs::read_to_string(p).unwrap().lines().filter(|l| !l.is_empty()).count()).sum();
    assert_eq!(kept_lines, 20, "the unsent lines are kept in `directory`: {kept:?}");

    tokio::task::block_in_place(|| cluster.start_again());
    let mut server = SinkServer::start(&config, &[]);
    // Sent at the start, not at the first prediction after it: a replica that gets no more
    // traffic must not sit on them.
    let url = cluster.url();
    let mut at_start = None;
    let sent_at_start = tokio::time::timeout(Duration::from_secs(20), async {
        while at_start != Some(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            at_start = rows(&url, "inferd_predictions").await;
        }
    })
    .await
    .is_ok();
    // Checked at the end: first, whether a prediction sends them.
    answers.extend(Load::start(&server.base, 1, "after", Some(1)).done().await);
    let answered = ok_ids(&answers);
    wait_for_rows(&cluster, "inferd_predictions", answered.len(), Duration::from_secs(30)).await;
    assert_same_ids(request_ids(&cluster, "inferd_predictions").await, &answered, "rows after the next start");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("unsent")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "sent lines are not kept: {left:?}");
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(3 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    assert!(
        sent_at_start,
        "the kept lines were not sent within 20 s of the next start ({at_start:?} rows of 30), only once a \
         prediction came"
    );
}

/// `lossy = true` with PostgreSQL down: requests are answered 200 in time, and every answered
/// line is either a row once the database is back or counted as dropped; none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lossy_with_postgres_down_answers_and_counts_every_line_it_drops() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        "shutdown_grace_seconds = 10\nrequest_timeout_ms = 2000",
        "lossy = true\nstall_ms = 500\nbuffer_requests = 4",
        &format!("url = \"{}\"\ntimeout_ms = 1000\nbuffer_bytes = 65536\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let mut answers = Load::start(&server.base, 2, "up", Some(10)).done().await;
    // Lossy, a full buffer drops even while the database is up: rows and drops, then, as below.
    let url = cluster.url();
    let mut seen = (None, None);
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = metrics(&server).await;
            seen = (
                rows(&url, "inferd_predictions").await,
                metric(&text, "inferd_prediction_log_dropped_total", &[("reason", "buffer_full")]),
            );
            if seen.0.unwrap_or(0) as f64 + seen.1.unwrap_or(0.0) >= 10.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "10 answers: (rows, dropped for a full buffer) {seen:?}");
    println!("lossy, PostgreSQL up: (rows, dropped) {seen:?} of 10");
    tokio::task::block_in_place(|| cluster.stop());
    let down = Load::start(&server.base, 8, "down", Some(1000)).done().await;
    assert_eq!(ok_ids(&down).len(), 1000, "lossy: answered whatever the log does: {:?}", statuses(&down));
    let slowest = down.iter().map(|a| a.took).max().unwrap();
    assert!(slowest < Duration::from_millis(2000), "an answer past its deadline: {slowest:?}");
    answers.extend(down);
    tokio::task::block_in_place(|| cluster.start_again());

    let answered = ok_ids(&answers);
    let mut last = (0, 0.0);
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = metrics(&server).await;
            let dropped: f64 = ["buffer_full", "write_error", "closed", "unavailable", "shutdown"]
                .iter()
                .filter_map(|reason| metric(&text, "inferd_prediction_log_dropped_total", &[("reason", reason)]))
                .sum();
            let held = rows(&url, "inferd_predictions").await.unwrap_or(0);
            last = (held, dropped);
            if held as f64 + dropped >= answered.len() as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "rows and drops (got {last:?}) do not account for the {} answers", answered.len());
    assert_eq!(last.0 as f64 + last.1, answered.len() as f64, "rows {} + dropped {} = answers", last.0, last.1);
    println!("lossy, PostgreSQL down: {} answers, {} rows, {} dropped", answered.len(), last.0, last.1);
    assert!(last.1 > 0.0, "1000 lines past a 64 KiB buffer: some dropped, and counted");
    let mut ids = request_ids(&cluster, "inferd_predictions").await;
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a row written twice");
    assert!(ids.iter().all(|id| answered.binary_search(id).is_ok()), "a row for a request not answered 200");
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
}

/// `INFERD_PREDICTION_LOG_SINK` and `INFERD_PREDICTION_LOG_URL` override the file and
/// `DATABASE_URL` (both naming a database that is not there).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_environment_overrides_the_sink_and_its_url() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/postgres", super::free_port());
    let config = config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        &format!(
            "sink = \"files\"\ndirectory = \"{}\"\n\n[prediction_log.postgres]\nurl = \"{nowhere}\"\n",
            dir.path().join("logs").display()
        ),
    );
    let env = [
        ("INFERD_PREDICTION_LOG_SINK".to_owned(), "postgres".to_owned()),
        ("INFERD_PREDICTION_LOG_URL".to_owned(), cluster.url()),
        ("DATABASE_URL".to_owned(), nowhere.clone()),
    ];
    let mut server = SinkServer::start(&config, &env);
    let answers = Load::start(&server.base, 2, "env", Some(10)).done().await;
    assert_eq!(ok_ids(&answers).len(), 10, "{:?}", statuses(&answers));
    wait_for_rows(&cluster, "inferd_predictions", 10, Duration::from_secs(30)).await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let files: Vec<_> =
        std::fs::read_dir(dir.path().join("logs")).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(files.iter().all(|f| !f.to_string_lossy().contains("predictions.")), "no prediction files: {files:?}");
}

/// The principal an API key names is in its rows' `principal` column.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_principal_is_in_its_rows() {
    use sha2::Digest;
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config =
        postgres_config(dir.path(), "shutdown_grace_seconds = 10", "", &format!("url = \"{}\"\n", cluster.url()));
    let digest = hex::encode(sha2::Sha256::digest(b"key-of-alice"));
    let env = [("INFERD_API_KEYS".to_owned(), format!("alice:predict:{digest}"))];
    let mut server = SinkServer::start(&config, &env);
    let client = reqwest::Client::new();
    for i in 0..3 {
        let response = client
            .post(server.url("/predict"))
            .header("x-api-key", "key-of-alice")
            .header("x-request-id", format!("alice-{i}"))
            .json(&serde_json::json!({"instances": [schema_example("house_price")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_for_rows(&cluster, "inferd_predictions", 3, Duration::from_secs(30)).await;
    let mut conn = cluster.connect().await;
    let principals: Vec<Option<String>> =
        sqlx::query_scalar("select principal from inferd_predictions").fetch_all(&mut conn).await.unwrap();
    assert_eq!(principals, vec![Some("alice".to_owned()); 3]);
    drop(conn);
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
}

/// `sslmode=require` in the URL is honoured: the throwaway cluster has no TLS, so no row may
/// arrive by a plain connection, and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sslmode_require_is_honoured() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        "shutdown_grace_seconds = 3",
        "",
        &format!("url = \"{}?sslmode=require\"\ntimeout_ms = 1000\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let answers = Load::start(&server.base, 2, "tls", Some(10)).done().await;
    println!("sslmode=require on a server without TLS: {:?}", statuses(&answers));
    eventually(Duration::from_secs(10), "failed connects counted", || async {
        metric(&metrics(&server).await, "inferd_prediction_log_sink_errors_total", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(rows(&cluster.url(), "inferd_predictions").await, None, "no table made over a plain connection");
    let (_, took) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(3 + 2)));
    println!("exit {took:?} after SIGTERM with PostgreSQL refusing TLS");
}

/// `acknowledge = "written"`: an answer waits for its row's commit, so with PostgreSQL down no
/// request is answered 200; each is refused by its deadline, and every 200 has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledge_written_answers_no_200_while_postgres_is_down() {
    const DEADLINE: Duration = Duration::from_millis(2000);
    const SLACK: Duration = Duration::from_millis(1500);
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(
        dir.path(),
        &format!("shutdown_grace_seconds = 10\nrequest_timeout_ms = {}", DEADLINE.as_millis()),
        "acknowledge = \"written\"\nstall_ms = 500",
        &format!("url = \"{}\"\ntimeout_ms = 1000\n", cluster.url()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let mut answers = Load::start(&server.base, 2, "up", Some(10)).done().await;
    assert_eq!(ok_ids(&answers).len(), 10, "{:?}", statuses(&answers));
    assert_eq!(rows(&cluster.url(), "inferd_predictions").await, Some(10), "committed before the answers");
    tokio::task::block_in_place(|| cluster.stop());
    let down = Load::start(&server.base, 4, "down", Some(12)).done().await;
    println!("acknowledge = written, PostgreSQL down: {:?}", statuses(&down));
    for answer in &down {
        assert_ne!(answer.status, 200, "answered 200 with its row not committed: {answer:?}");
        assert!(answer.took < DEADLINE + SLACK, "an answer past its deadline: {answer:?}");
    }
    answers.extend(down);
    tokio::task::block_in_place(|| cluster.start_again());
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), "/ready answers 200 once PostgreSQL is back", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 200
    })
    .await;
    let after = Load::start(&server.base, 2, "again", Some(10)).done().await;
    assert_eq!(ok_ids(&after).len(), 10, "{:?}", statuses(&after));
    answers.extend(after);
    let mut held = request_ids(&cluster, "inferd_predictions").await;
    held.sort();
    let count = held.len();
    held.dedup();
    assert_eq!(held.len(), count, "a row written twice");
    let missing: Vec<String> = ok_ids(&answers).into_iter().filter(|id| held.binary_search(id).is_err()).collect();
    assert!(missing.is_empty(), "answered 200 without a row: {missing:?}");
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
}

/// The column names of `table`, in order.
async fn columns(conn: &mut sqlx::PgConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select column_name::text from information_schema.columns where table_name = $1 order by ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// A 1-row `/predict` with `x-request-id: id`, and `traceparent` in trace `trace_id` when given.
async fn traced_predict(server: &SinkServer, id: &str, trace_id: Option<&str>) {
    let mut request = reqwest::Client::new()
        .post(server.url("/predict"))
        .header("x-request-id", id)
        .json(&serde_json::json!({"instances": [schema_example("house_price")]}));
    if let Some(trace_id) = trace_id {
        request = request.header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"));
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

/// With traces on, a row holds its request's trace id in `trace_id`. A table made before that
/// column keeps taking rows: while a long read holds it, the column cannot be added, so rows go
/// in without their trace id and a warning says why; the next start adds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traced_requests_row_holds_its_trace_id_and_an_older_table_gains_the_column() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cluster = PgCluster::start();
    let mut conn = cluster.connect().await;
    // The table as inferd made it before the column.
    sqlx::query(
        "create table inferd_predictions (id bigserial primary key, ts timestamptz not null, \
         request_id text not null, principal text, model text not null, version text not null, \
         instance integer not null, inputs jsonb not null, outputs jsonb not null, batch_size integer not null, \
         queue_ms double precision not null, inference_ms double precision not null)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config =
        postgres_config(dir.path(), "shutdown_grace_seconds = 10", "", &format!("url = \"{}\"\n", cluster.url()));
    // Traces on, to a collector that is not there: the spans are lost, the trace ids are not.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://127.0.0.1:{}", super::free_port())),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "600000".to_owned()),
    ];

    let mut reader = cluster.connect().await;
    let mut reading = reader.begin().await.unwrap();
    sqlx::query("select count(*) from inferd_predictions").execute(&mut *reading).await.unwrap();
    let mut server = SinkServer::start(&config, &otel);
    traced_predict(&server, "while-read", Some(TRACE_ID)).await;
    wait_for_rows(&cluster, "inferd_predictions", 1, Duration::from_secs(30)).await;
    assert!(!columns(&mut conn, "inferd_predictions").await.contains(&"trace_id".to_owned()));
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let warned = server.stdout_after_exit().iter().any(|l| l.contains("no trace_id column"));
    assert!(warned, "a warning says the rows go in without their trace id");
    reading.rollback().await.unwrap();

    let mut server = SinkServer::start(&config, &otel);
    traced_predict(&server, "caller-traced", Some(TRACE_ID)).await;
    traced_predict(&server, "root", None).await;
    wait_for_rows(&cluster, "inferd_predictions", 3, Duration::from_secs(30)).await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let columns = columns(&mut conn, "inferd_predictions").await;
    assert_eq!(columns.last().map(String::as_str), Some("trace_id"), "added to the older table: {columns:?}");
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("select request_id, trace_id from inferd_predictions order by id").fetch_all(&mut conn).await.unwrap();
    assert_eq!(rows[0], ("while-read".to_owned(), None), "a row from before the column has none");
    assert_eq!(rows[1], ("caller-traced".to_owned(), Some(TRACE_ID.to_owned())), "the caller's trace");
    let (id, root) = &rows[2];
    let root = root.as_deref().unwrap_or_default();
    assert_eq!(id, "root");
    assert!(root.len() == 32 && root.bytes().all(|b| b.is_ascii_hexdigit()) && root != TRACE_ID, "a trace of its own: {root}");
}
