//! `sink = "object_store"` against moto's S3: records spooled locally and uploaded as gzipped
//! JSON Lines objects named `<prefix>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>-<host>-<instance
//! id>-<seq>.jsonl.gz`, at shutdown within the grace period, at `upload_interval_s` while
//! serving, and at the next start for parts a failed upload left behind; `inferd replay
//! s3://...` reads them back.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::moto::Moto;
use super::{assert_same_ids, config, hostname, ok_ids, replay, statuses, Load, SinkServer};
use crate::helpers::{eventually, metric};

const GRACE_S: u64 = 10;

/// A config with `sink = "object_store"` to `url`, the spool in `dir`, `keys` added to
/// `[prediction_log.object_store]`.
fn object_store_config(dir: &Path, url: &str, keys: &str) -> PathBuf {
    object_store_config_with(dir, url, "", keys)
}

/// [`object_store_config`] with `log_keys` added to `[prediction_log]`.
fn object_store_config_with(dir: &Path, url: &str, log_keys: &str, keys: &str) -> PathBuf {
    config(
        dir,
        &format!("shutdown_grace_seconds = {GRACE_S}"),
        &format!(
            "sink = \"object_store\"\ndirectory = \"{}\"\n{log_keys}\n\n[prediction_log.object_store]\nurl = \"{url}\"\n{keys}\n",
            dir.join("spool").display()
        ),
    )
}

async fn metrics(server: &SinkServer) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

/// The parts of an object's name, `(day, stamp, instance id, seq)`, checked against
/// `<prefix>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>-<host>-<instance id>-<seq>.jsonl.gz`.
fn name_parts<'a>(key: &'a str, prefix: &str, host: &str) -> (&'a str, &'a str, &'a str, &'a str) {
    let bad = |why: &str| -> ! {
        panic!("object {key:?} is not named <prefix>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>-<host>-<instance id>-<seq>.jsonl.gz: {why}")
    };
    let rest = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')).unwrap_or_else(|| bad("prefix"));
    let (day, file) = rest.split_once('/').unwrap_or_else(|| bad("no day folder"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let day_ok = day.len() == 10 && day.split('-').map(str::len).eq([4, 2, 2]) && digits(&day.replace('-', ""));
    if !day_ok {
        bad("day");
    }
    let stem = file.strip_suffix(".jsonl.gz").unwrap_or_else(|| bad("suffix"));
    let stamp = stem.get(..19).unwrap_or_else(|| bad("stamp"));
    let stamp_ok = digits(&stamp[..8]) && &stamp[8..9] == "T" && digits(&stamp[9..18]) && &stamp[18..] == "Z";
    if !stamp_ok {
        bad("stamp");
    }
    if stamp[..8] != day.replace('-', "") {
        bad("the stamp's day is the folder's");
    }
    // The host as it is, or with what is not a letter or digit made a `-` (the name stays a
    // plain path segment).
    let plain: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let tail = [host, plain.as_str()]
        .iter()
        .find_map(|h| stem[19..].strip_prefix(&format!("-{h}-")))
        .unwrap_or_else(|| bad(&format!("host {host:?}")));
    let (instance, seq) = tail.rsplit_once('-').unwrap_or_else(|| bad("instance id and seq"));
    if instance.is_empty() || !digits(seq) {
        bad("instance id and seq");
    }
    (day, stamp, instance, seq)
}

/// Every line of every object under `prefix`, gunzipped and parsed, with the keys (in name order).
async fn uploaded(moto: &Moto, bucket: &str, prefix: &str) -> (Vec<String>, Vec<Value>) {
    let keys = moto.list(bucket, &format!("{prefix}/")).await;
    let mut lines = Vec::new();
    for key in &keys {
        let body = moto.get(bucket, key).await;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{key} is not gzipped text: {e}"));
        for line in text.lines() {
            lines.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{key}: not a JSON line ({e}): {line}")));
        }
    }
    (keys, lines)
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["request_id"].as_str().expect("a request id").to_owned()).collect()
}

/// Files under the spool folder, with their sizes.
fn spool_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("spool")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_uploads_every_pending_part_within_the_grace_period() {
    let moto = Moto::start();
    moto.create_bucket("inferd-preds").await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing uploads by age or size before the signal: every part is pending at SIGTERM.
    let config = object_store_config(dir.path(), "s3://inferd-preds/fleet/a", "upload_interval_s = 3600");
    let mut server = SinkServer::start(&config, &moto.env());
    let answers = Load::start(&server.base, 8, "s3", Some(600)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 600, "{:?}", statuses(&answers));

    assert_eq!(moto.list("inferd-preds", "").await, Vec::<String>::new(), "uploaded before its age or size");
    let spooled: u64 = spool_files(dir.path()).iter().map(|(_, size)| size).sum();
    assert!(spooled > 0, "the records wait in the local spool: {:?}", spool_files(dir.path()));
    let text = metrics(&server).await;
    let gauge = metric(&text, "inferd_prediction_log_spool_bytes", &[]);
    assert!(gauge.is_some_and(|b| b > 0.0), "inferd_prediction_log_spool_bytes: {gauge:?}");
    assert_eq!(metric(&text, "inferd_prediction_log_lines_total", &[]), Some(600.0), "lines taken durably (spooled)");

    let (code, took) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    println!("exit {took:?} after SIGTERM with 600 lines to upload");

    let (keys, lines) = uploaded(&moto, "inferd-preds", "fleet/a").await;
    assert!(!keys.is_empty(), "nothing uploaded at SIGTERM; moto:\n{}", moto.log());
    let host = hostname();
    for key in &keys {
        name_parts(key, "fleet/a", &host);
    }
    assert_same_ids(ids(&lines), &answered, "lines in the uploaded objects");
    for line in &lines {
        assert!(line.get("log").is_none(), "the files' line, not stdout's: {line}");
        assert_eq!((line["model"].as_str(), line["version"].as_str()), (Some("house_price"), Some("1")), "{line}");
        assert!(line["ts"].is_string() && line["inputs"].is_object() && line["outputs"]["price"].is_f64(), "{line}");
    }
    let left: Vec<_> =
        spool_files(dir.path()).into_iter().filter(|(path, _)| path.to_string_lossy().contains(".jsonl")).collect();
    assert!(left.is_empty(), "uploaded parts left in the spool: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_upload_while_serving_and_two_replicas_never_collide() {
    let moto = Moto::start();
    moto.create_bucket("inferd-live").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = "s3://inferd-live/live";
    let mut a = SinkServer::start(&object_store_config(dir_a.path(), url, "upload_interval_s = 1"), &moto.env());
    let mut b = SinkServer::start(&object_store_config(dir_b.path(), url, "upload_interval_s = 1"), &moto.env());
    let load_a = Load::start(&a.base, 4, "a", Some(400));
    let load_b = Load::start(&b.base, 4, "b", Some(400));
    let mut answers = load_a.done().await;
    answers.extend(load_b.done().await);
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 800, "{:?}", statuses(&answers));

    // Both still serving: every line is uploaded by age alone.
    eventually(Duration::from_secs(30), "every answered line uploaded while the servers run", || async {
        uploaded(&moto, "inferd-live", "live").await.1.len() >= answered.len()
    })
    .await;
    let (keys, lines) = uploaded(&moto, "inferd-live", "live").await;
    assert_same_ids(ids(&lines), &answered, "lines uploaded while serving");
    let host = hostname();
    let instances: BTreeSet<&str> = keys.iter().map(|k| name_parts(k, "live", &host).2).collect();
    assert_eq!(instances.len(), 2, "two replicas on one host, two instance ids: {keys:?}");
    for server in [&a, &b] {
        let text = metrics(server).await;
        let ok = metric(&text, "inferd_prediction_log_uploads_total", &[("outcome", "ok")]);
        assert!(ok.is_some_and(|n| n >= 1.0), "uploads_total{{outcome=\"ok\"}}: {ok:?}");
    }

    for server in [&mut a, &mut b] {
        let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
        assert_eq!(code, Some(0), "{}", server.stderr());
    }
    let (_, lines) = uploaded(&moto, "inferd-live", "live").await;
    assert_same_ids(ids(&lines), &answered, "lines after both replicas stopped: nothing uploaded twice");
    // Replay reads the objects of both replicas.
    let report = replay(&["s3://inferd-live/live"], &moto.env());
    assert_eq!((report["replayed"].as_u64(), report["different"].as_u64()), (Some(800), Some(0)), "{report}");
}

/// Uploads that fail (the bucket is not there) are counted and retried, requests are answered
/// from the spool, and the parts left at exit are uploaded by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_left_by_failed_uploads_are_uploaded_at_the_next_start() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = object_store_config(dir.path(), "s3://inferd-later/p", "upload_interval_s = 1");
    let mut server = SinkServer::start(&config, &moto.env());
    let answers = Load::start(&server.base, 4, "early", Some(200)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 200, "the spool takes the lines while uploads fail: {:?}", statuses(&answers));
    let mut text = String::new();
    let counted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            text = metrics(&server).await;
            let uploads = metric(&text, "inferd_prediction_log_uploads_total", &[("outcome", "error")]);
            if uploads.is_some_and(|n| n >= 1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let sink_lines =
        || text.lines().filter(|l| l.contains("prediction_log") && !l.starts_with('#')).collect::<Vec<_>>();
    assert!(
        counted.is_ok(),
        "not within 30 s: failed uploads counted as uploads_total{{outcome=\"error\"}}:\n{:#?}",
        sink_lines()
    );
    // Checked at the end, so that what follows is tested whatever this says.
    let sink_errors = metric(&text, "inferd_prediction_log_sink_errors_total", &[]);
    let exposition = sink_lines();
    let (_, took) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    println!("exit {took:?} after SIGTERM with uploads failing; stderr:\n{}", server.stderr());
    drop(server);
    let spooled: u64 = spool_files(dir.path()).iter().map(|(_, size)| size).sum();
    assert!(spooled > 0, "the parts not uploaded stay in the spool");

    moto.create_bucket("inferd-later").await;
    let mut server = SinkServer::start(&config, &moto.env());
    eventually(Duration::from_secs(30), "the parts left behind are uploaded by the next start", || async {
        uploaded(&moto, "inferd-later", "p").await.1.len() >= answered.len()
    })
    .await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let (keys, lines) = uploaded(&moto, "inferd-later", "p").await;
    let host = hostname();
    for key in &keys {
        name_parts(key, "p", &host);
    }
    assert_same_ids(ids(&lines), &answered, "lines uploaded by the next start");
    assert!(
        sink_errors.is_some_and(|n| n >= 1.0),
        "failed uploads are counted in inferd_prediction_log_sink_errors_total as well: {sink_errors:?} in\n{exposition:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_reads_every_object_under_the_prefix() {
    let moto = Moto::start();
    moto.create_bucket("inferd-replay").await;
    let dir = tempfile::tempdir().unwrap();
    let config = object_store_config(dir.path(), "s3://inferd-replay/r", "upload_interval_s = 3600");
    let mut server = SinkServer::start(&config, &moto.env());
    let answers = Load::start(&server.base, 4, "replay", Some(64)).done().await;
    assert_eq!(ok_ids(&answers).len(), 64, "{:?}", statuses(&answers));
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let (keys, lines) = uploaded(&moto, "inferd-replay", "r").await;
    assert!(!keys.is_empty(), "uploaded at SIGTERM");
    // Beside the prefix, a name that starts the same: not under `r/`, so not read (its price
    // is off, and would count as different).
    let mut stray = lines[0].clone();
    stray["outputs"]["price"] = serde_json::json!(stray["outputs"]["price"].as_f64().unwrap() * 2.0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    writeln!(gz, "{stray}").unwrap();
    moto.put("inferd-replay", "rx/stray.jsonl.gz", gz.finish().unwrap()).await;

    let report = replay(&["s3://inferd-replay/r"], &moto.env());
    assert_eq!(report["lines"], 64, "{report}");
    assert_eq!(report["replayed"], 64, "{report}");
    assert_eq!(report["identical"], 64, "{report}");
    assert_eq!(report["different"], 0, "{report}");
    let report = replay(&["--model", "house_price_linear", "s3://inferd-replay/r"], &moto.env());
    assert_eq!(report["lines"], 0, "--model: {report}");
    let report = replay(&["--since", "2999-01-01T00:00:00Z", "s3://inferd-replay/r"], &moto.env());
    assert_eq!(report["lines"], 0, "--since: {report}");
}

/// A server killed (SIGKILL) mid-load leaves its open part in the spool: the next start cuts it
/// to whole lines and uploads it. With `acknowledge = "written"` every answered line was
/// spooled before its answer, so every one arrives; a line may arrive whose answer the kill
/// cut off, but none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_part_left_open_by_a_crash_is_uploaded_by_the_next_start() {
    let moto = Moto::start();
    moto.create_bucket("inferd-crash").await;
    let dir = tempfile::tempdir().unwrap();
    let config = object_store_config_with(
        dir.path(),
        "s3://inferd-crash/c",
        "acknowledge = \"written\"",
        "upload_interval_s = 3600",
    );
    let mut server = SinkServer::start(&config, &moto.env());
    let load = Load::start(&server.base, 4, "crash", None);
    eventually(Duration::from_secs(30), "lines spooled before the kill", || async {
        metric(&metrics(&server).await, "inferd_prediction_log_lines_total", &[]).is_some_and(|n| n >= 300.0)
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let answers = load.finish().await;
    let answered = ok_ids(&answers);
    assert!(answered.len() >= 300, "{:?}", statuses(&answers));
    println!("left by the kill: {:?}", spool_files(dir.path()));
    assert_eq!(moto.list("inferd-crash", "").await, Vec::<String>::new(), "nothing uploaded before the kill");

    let mut server = SinkServer::start(&config, &moto.env());
    eventually(Duration::from_secs(30), "the part left open is uploaded by the next start", || async {
        uploaded(&moto, "inferd-crash", "c").await.1.len() >= answered.len()
    })
    .await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let (_, lines) = uploaded(&moto, "inferd-crash", "c").await;
    let mut held = ids(&lines);
    held.sort();
    let count = held.len();
    held.dedup();
    assert_eq!(held.len(), count, "a line uploaded twice");
    let missing: Vec<&String> = answered.iter().filter(|id| held.binary_search(id).is_err()).collect();
    assert!(
        missing.is_empty(),
        "answered 200, lost to the kill: {} of {}, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    let sent: BTreeSet<&String> = answers.iter().map(|a| &a.id).collect();
    let unanswered: Vec<&String> = held.iter().filter(|id| answered.binary_search(id).is_err()).collect();
    assert!(unanswered.iter().all(|id| sent.contains(id)), "lines for requests never sent: {unanswered:?}");
    assert!(unanswered.len() <= 4, "at most the 4 requests in flight at the kill: {unanswered:?}");
}

/// A full spool (uploads failing, `spool_max_bytes` reached) is a 503 within the deadline and
/// an unready instance; once uploads work, the instance is ready and every answered line is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_is_503_and_unready_until_uploads_work_again() {
    const DEADLINE: Duration = Duration::from_millis(2000);
    const SLACK: Duration = Duration::from_millis(1500);
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!("shutdown_grace_seconds = {GRACE_S}\nrequest_timeout_ms = {}", DEADLINE.as_millis()),
        &format!(
            "sink = \"object_store\"\ndirectory = \"{}\"\nstall_ms = 500\nbuffer_requests = 4\n\n\
             [prediction_log.object_store]\nurl = \"s3://inferd-full/f\"\nupload_interval_s = 1\npart_bytes = 4096\n\
             spool_max_bytes = 65536\n",
            dir.path().join("spool").display()
        ),
    );
    let mut server = SinkServer::start(&config, &moto.env());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let load = Load::start(&server.base, 8, "full", None);
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let response = client.get(server.url("/ready")).send().await.unwrap();
            if response.status() == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // /ready turns 503 as the spool fills; requests are refused once the writer has held its
    // lines for stall_ms: the load goes on past that, on a busy machine too.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let answers = load.finish().await;
    let text = metrics(&server).await;
    let state: Vec<&str> = text.lines().filter(|l| l.contains("prediction_log") && !l.starts_with('#')).collect();
    println!("bucket missing: {:?}; {state:#?}", statuses(&answers));
    assert!(refused.is_ok(), "/ready still 200 after 60 s of a full spool: {:?}\n{state:#?}", statuses(&answers));
    for answer in &answers {
        assert!([200, 503].contains(&answer.status), "200 or 503 with the spool full: {answer:?}");
        assert!(answer.took < DEADLINE + SLACK, "an answer past its deadline: {answer:?}");
    }
    assert!(answers.iter().any(|a| a.status == 503), "refused once the spool is full: {:?}", statuses(&answers));
    let spooled = metric(&text, "inferd_prediction_log_spool_bytes", &[]).unwrap();
    assert!(spooled <= 65536.0 + 4096.0, "the spool is bounded: {spooled} bytes");

    moto.create_bucket("inferd-full").await;
    eventually(Duration::from_secs(60), "/ready answers 200 once uploads work", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 200
    })
    .await;
    let answered = ok_ids(&answers);
    eventually(Duration::from_secs(60), "every answered line uploaded", || async {
        uploaded(&moto, "inferd-full", "f").await.1.len() >= answered.len()
    })
    .await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(GRACE_S + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let (_, lines) = uploaded(&moto, "inferd-full", "f").await;
    assert_same_ids(ids(&lines), &answered, "lines after the spool drained");
}
