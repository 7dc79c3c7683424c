//! A disk that fills up: a 256 KiB tmpfs, which takes root (or CAP_SYS_ADMIN) to mount, so
//! behind the `external-tools` feature; scripts/test.sh runs it as root (CI does).

use std::path::Path;
use std::process::Command;

use super::{predict_as, read_lines, rows, wait_for_accounted, DROPPED};
use crate::helpers::{metric, test_config, TestApp};

/// A small tmpfs, unmounted when dropped (lazily, should a failed test leave a file open).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Self(dir),
            Ok(out) => panic!(
                "this test needs to mount a tmpfs (root or CAP_SYS_ADMIN): mount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("this test needs the `mount` command to mount a tmpfs: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_only_whole_lines_and_counts_what_is_on_disk() {
    let disk = Tmpfs::mount("256k");
    // Removed once the disk is full, to give space back.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![b'x'; 64 * 1024]).unwrap();
    let mut config = test_config();
    config.prediction_log.directory = disk.path().join("logs");
    let app = TestApp::spawn_with(config).await;
    let batch = rows(10);

    let mut made = 0;
    loop {
        predict_as(&app, &format!("fill-{made}"), &batch).await;
        made += batch.len();
        let text = app.metrics().await;
        if metric(&text, DROPPED, &[("reason", "write_error")]).unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(made < 20_000, "256 KiB should be full long before {made} predictions");
    }
    std::fs::remove_file(&filler).unwrap();
    for i in 0..5 {
        predict_as(&app, &format!("after-{i}"), &batch).await;
        made += batch.len();
    }
    let (written, dropped) = wait_for_accounted(&app, made).await;
    assert!(dropped > 0 && written > 0, "{written} written, {dropped} dropped");
    let dir = app.prediction_log_dir.clone();
    assert_eq!(read_lines(&dir).len(), written, "lines_total says what is on disk");
    let _ = app.stop().await;

    let lines = read_lines(&dir);
    assert_eq!(lines.len(), written, "every line parses, none added at shutdown");
    let after = lines.iter().filter(|l| l["request_id"] == "after-4").count();
    assert_eq!(after, batch.len(), "written again once space came back");
    println!("{made} predictions: {written} lines written, {dropped} dropped");
}
