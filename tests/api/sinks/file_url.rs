//! `sink = "object_store"` with a `file://` URL: the same spool, parts and object names as S3,
//! into a local folder, with no external tool; `inferd replay file://...` reads them back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{assert_same_ids, config, hostname, ok_ids, replay, statuses, Load, SinkServer};

/// Every file under `dir`, as paths relative to it, sorted.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_object_store_sink_uploads_to_a_file_url_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let url = format!("file://{}/fleet", store.display());
    let config = config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        &format!(
            "sink = \"object_store\"\ndirectory = \"{}\"\n\n[prediction_log.object_store]\nurl = \"{url}\"\n\
             upload_interval_s = 3600\n",
            dir.path().join("spool").display()
        ),
    );
    let mut server = SinkServer::start(&config, &[]);
    let answers = Load::start(&server.base, 4, "file", Some(100)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 100, "{:?}", statuses(&answers));
    assert_eq!(objects(&store), Vec::<PathBuf>::new(), "nothing uploaded before its age, size or SIGTERM");
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());

    let names = objects(&store);
    assert!(!names.is_empty(), "uploaded at SIGTERM");
    let host = hostname();
    let plain: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut held = Vec::new();
    for name in &names {
        let name = name.to_str().unwrap();
        let file = name.strip_prefix("fleet/").unwrap_or_else(|| panic!("{name} is under the prefix"));
        let (day, file) = file.split_once('/').unwrap_or_else(|| panic!("{name}: a day folder"));
        assert_eq!(day.len(), 10, "{name}");
        assert!(file.ends_with(".jsonl.gz"), "{name}");
        assert!(file.contains(&format!("-{host}-")) || file.contains(&format!("-{plain}-")), "{name} names the host");
        let mut text = String::new();
        let gz = std::fs::read(store.join(name)).unwrap();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            held.push(line["request_id"].as_str().unwrap().to_owned());
        }
    }
    assert_same_ids(held, &answered, "lines in the file:// objects");

    let report = replay(&[&url], &[]);
    assert_eq!(report["replayed"], 100, "{report}");
    assert_eq!(report["different"], 0, "{report}");
}

/// A part is closed and uploaded at `part_bytes`, whatever its age: objects appear while the
/// server runs, each of about that size before gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_are_uploaded_at_part_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let url = format!("file://{}/sized", store.display());
    let config = config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        &format!(
            "sink = \"object_store\"\ndirectory = \"{}\"\n\n[prediction_log.object_store]\nurl = \"{url}\"\n\
             upload_interval_s = 3600\npart_bytes = 4096\n",
            dir.path().join("spool").display()
        ),
    );
    let mut server = SinkServer::start(&config, &[]);
    let answers = Load::start(&server.base, 4, "sized", Some(100)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 100, "{:?}", statuses(&answers));
    // 100 lines of about 450 bytes: ten parts or so, all but the last uploaded by size.
    crate::helpers::eventually(Duration::from_secs(30), "parts uploaded by size while serving", || async {
        objects(&store).len() >= 5
    })
    .await;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let mut held = Vec::new();
    let mut largest = 0;
    let names = objects(&store);
    for (i, name) in names.iter().enumerate() {
        let mut text = String::new();
        let gz = std::fs::read(store.join(name)).unwrap();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        largest = largest.max(text.len());
        // Closed once it reaches part_bytes (the write that crosses it goes in whole), not
        // before; the last one at SIGTERM.
        if i + 1 < names.len() {
            assert!(text.len() >= 4096, "{name:?}: closed at {} bytes, below part_bytes = 4096", text.len());
        }
        for line in text.lines() {
            held.push(serde_json::from_str::<Value>(line).unwrap()["request_id"].as_str().unwrap().to_owned());
        }
    }
    println!("{} objects, the largest {largest} bytes before gzip", objects(&store).len());
    assert_same_ids(held, &answered, "lines in the parts cut by size");
}
