//! What deployments lean on: `inferd probe` (image health checks), systemd's readiness
//! protocol, and finding the runtime library from where the binary runs.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::process::{inferd, signal, start, start_with};

fn port_of(base: &str) -> &str {
    base.rsplit(':').next().unwrap()
}

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = inferd().arg("probe").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn probe_exits_0_while_ready_and_1_once_the_server_is_gone() {
    let mut server = start(&[]);
    let port = port_of(&server.base).to_owned();
    let (code, text) = probe(&["--ready", "--port", &port]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}/ready: 200")), "{text}");
    // The port from the environment, as a platform sets it; runtime.toml binds 0.0.0.0, probed on loopback.
    let out = inferd().args(["probe"]).env("PORT", &port).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    signal(&server, "TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    let (code, text) = probe(&["--port", &port]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect to 127.0.0.1:"), "{text}");
}

#[test]
fn probe_exits_1_on_any_other_status_and_prints_the_reason() {
    // A listener that answers as a loading server does. (From SIGTERM on, a draining inferd
    // completes no new handshakes, so a probe then fails to connect rather than reading 503.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let n = stream.read(&mut request).unwrap();
        let body = r#"{"error":"models are still loading","error_type":"not_ready"}"#;
        write!(stream, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let (code, text) = probe(&["--ready", "--port", &port]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("/ready: 503") && text.contains("not_ready"), "{text}");
    assert!(answer.join().unwrap().starts_with("GET /ready HTTP/1.1\r\n"));
}

#[test]
fn probe_refuses_a_config_it_cannot_read_with_exit_2() {
    let (code, text) = probe(&["--config", "no-such.toml"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot read config file no-such.toml"), "{text}");
}

#[test]
fn systemd_hears_ready_once_models_load_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut server = start_with(&[], &[("NOTIFY_SOCKET", path.as_os_str())]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 arrives");
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    // Ready is sent only once `/ready` says 200 (start waited for the "ready" line).
    let ready = inferd().args(["probe", "--ready", "--port", port_of(&server.base)]).status().unwrap();
    assert!(ready.success());

    signal(&server, "TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_runtime_library_is_found_next_to_a_moved_binary_not_where_it_was_built() {
    // A copy of the binary and the library in a folder of their own, run from elsewhere: the
    // checkout's `.ort/` is neither the working directory's nor reachable from the executable.
    let app = tempfile::tempdir().unwrap();
    let binary = app.path().join("inferd");
    std::fs::copy(env!("CARGO_BIN_EXE_inferd"), &binary).unwrap();
    let library = crate::helpers::repo().join(".ort/libonnxruntime.so.1.31.1");
    assert!(library.is_file(), "run scripts/fetch-onnxruntime.sh first: {} is missing", library.display());
    let config = crate::helpers::repo().join("runtime.toml");
    let run = |dir: &std::path::Path| {
        std::process::Command::new(&binary)
            .args(["openapi", "--config"])
            .arg(&config)
            .current_dir(dir)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap()
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(elsewhere.path());
    assert_eq!(out.status.code(), Some(1), "no library anywhere it looks: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ONNX Runtime library not found"), "{stderr}");
    assert!(!stderr.contains(env!("CARGO_MANIFEST_DIR")), "the build folder is not searched: {stderr}");

    std::fs::copy(&library, app.path().join("libonnxruntime.so.1.31.1")).unwrap();
    let out = run(elsewhere.path());
    assert_eq!(out.status.code(), Some(0), "found next to the binary: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn onnx_runtime_telemetry_is_off_so_nothing_is_written_to_home() {
    // ONNX Runtime's telemetry keeps a device id under ~/.cache unless ORT_DISABLE_TELEMETRY is
    // set, which inferd does for itself: under ProtectHome or a read-only image it would fail.
    let home = tempfile::tempdir().unwrap();
    let mut server = start_with(&[], &[("HOME", home.path().as_os_str())]);
    signal(&server, "TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    let written: Vec<_> = walk(home.path());
    assert!(written.is_empty(), "inferd wrote under HOME: {written:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                let mut inner = walk(&path);
                inner.push(path);
                inner
            } else {
                vec![path]
            }
        })
        .collect()
}
