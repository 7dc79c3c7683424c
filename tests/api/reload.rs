//! Reloading the configuration (`POST /admin/reload`): versions swapped under load, a refused
//! reload that leaves everything serving, and who may ask.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inferd::config::args::{Overrides, ServeArgs};
use inferd::config::Config;
use serde_json::{json, Value};

use crate::helpers::{eventually, repo, schema_example, TestApp};

/// A config file in `dir` serving house_price at the given versions (the last one is the
/// default version), each from the committed model, with the given extra lines per entry.
fn write_config(dir: &Path, versions: &[(&str, &str)]) -> PathBuf {
    let mut text = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n[prediction_log]\ndirectory = \"{}\"\n",
        dir.join("logs").display()
    );
    for (i, (version, extra)) in versions.iter().enumerate() {
        let last = i + 1 == versions.len();
        text += &format!(
            "[[models]]\nname = \"house_price\"\nversion = \"{version}\"\npath = \"{}\"\nschema = \"{}\"\n\
             default_version = {last}\n{extra}\n",
            repo().join("models/house_price.onnx").display(),
            repo().join("schemas/house_price.json").display(),
        );
    }
    let path = dir.join("inferd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn spawn_from(path: &Path) -> TestApp {
    let args = ServeArgs::new(Some(path.to_owned()), Overrides::default(), Vec::new());
    TestApp::spawn_with(Config::load(&args).expect("the test config loads")).await
}

async fn reload(app: &TestApp) -> (u16, Value) {
    let response = app.client.post(app.url("/admin/reload")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn results(report: &Value) -> Vec<(String, String)> {
    let models = report["models"].as_array().expect("models listed");
    models
        .iter()
        .map(|m| (m["version"].as_str().unwrap().to_owned(), m["result"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_swap_under_64_clients_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("1", "")]);
    let app = spawn_from(&path).await;
    let body = json!({"instances": [schema_example("house_price")]});
    let expected = app.post_json("/models/house_price/predict", &body).await.json::<Value>().await.unwrap();
    let price = expected["predictions"][0]["price"].clone();
    assert!(price.is_number(), "{expected}");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, body, stop, answered) = (
                app.client.clone(),
                app.url("/models/house_price/predict"),
                body.clone(),
                stop.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = client.post(&url).json(&body).send().await.expect("answered");
                    let status = response.status().as_u16();
                    let answer: Value = response.json().await.expect("JSON");
                    seen.push((status, answer));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    // Each stage lasts until the clients have had 64 more answers (one each, on average).
    let under_load = async || {
        let from = answered.load(Ordering::Relaxed);
        let more = async || answered.load(Ordering::Relaxed) >= from + 64;
        eventually(Duration::from_secs(30), "64 more answers to the clients", more).await;
    };
    under_load().await;

    // A second version, which becomes the default: loaded beside the first, then swapped in.
    write_config(dir.path(), &[("1", ""), ("2", "")]);
    let (status, report) = reload(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "reloaded");
    assert_eq!(results(&report), [("1".into(), "unchanged".into()), ("2".into(), "loaded".into())]);
    assert_eq!(report["restart_needed"], json!([]), "{report}");
    let after = app.post_json("/models/house_price/predict", &body).await.json::<Value>().await.unwrap();
    assert_eq!(after["version"], "2", "answered by the new default version once the reload returns");
    under_load().await;

    // The first version removed: requests still on it finish there, then it is dropped.
    write_config(dir.path(), &[("2", "")]);
    let (status, report) = reload(&app).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(results(&report), [("2".into(), "unchanged".into()), ("1".into(), "removed".into())]);
    under_load().await;
    stop.store(true, Ordering::Relaxed);

    let mut versions = std::collections::BTreeMap::<String, usize>::new();
    for client in clients {
        for (status, answer) in client.await.unwrap() {
            assert_eq!(status, 200, "a request failed during the swap: {answer}");
            assert_eq!(answer["predictions"][0]["price"], price, "{answer}");
            *versions.entry(answer["version"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(versions.keys().collect::<Vec<_>>(), ["1", "2"], "both versions answered: {versions:?}");
    let gone = app.client.get(app.url("/models/house_price/versions/1")).send().await.unwrap();
    assert_eq!(gone.status(), 404);

    // Only routing changes (the default version): the versions are kept, the routes follow.
    write_config(dir.path(), &[("2", ""), ("3", "")]);
    assert_eq!(reload(&app).await.0, 200);
    write_config(dir.path(), &[("3", ""), ("2", "")]);
    let (status, report) = reload(&app).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("reloaded")), "{report}");
    assert_eq!(results(&report), [("3".into(), "unchanged".into()), ("2".into(), "unchanged".into())]);
    let answer = app.post_json("/models/house_price/predict", &body).await.json::<Value>().await.unwrap();
    assert_eq!(answer["version"], "2", "{answer}");
    let info = app.get_json("/models/house_price").await;
    assert_eq!(info["version"], "2");
    write_config(dir.path(), &[("2", "")]);
    assert_eq!(reload(&app).await.0, 200);
    assert_eq!(info["files"]["model_sha256"].as_str().map(str::len), Some(64), "{info}");
    assert!(info["last_load_error"].is_null(), "{info}");

    let metrics = app.metrics().await;
    for series in [
        r#"inferd_model_loads_total{model="house_price",version="1",result="ok"} 1"#,
        r#"inferd_model_loads_total{model="house_price",version="2",result="ok"} 1"#,
        r#"inferd_reloads_total{result="ok"} 5"#,
        r#"inferd_model_info{model="house_price",version="1"} 0"#,
        r#"inferd_model_info{model="house_price",version="2"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == series), "missing {series}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_reload_that_fails_its_golden_check_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("1", "")]);
    let app = spawn_from(&path).await;

    let (status, report) = reload(&app).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("unchanged")), "{report}");

    // The committed golden file with one answer changed by 1%.
    let mut golden: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/house_price.golden.json")).unwrap())
            .unwrap();
    let case = &mut golden["cases"][2]["outputs"]["price"];
    let drifted = case.as_f64().unwrap() * 1.01;
    *case = json!(drifted);
    let file = dir.path().join("drifted.golden.json");
    std::fs::write(&file, golden.to_string()).unwrap();
    write_config(dir.path(), &[("1", &format!("golden = \"{}\"", file.display()))]);

    let (status, body) = reload(&app).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_type"], "reload_failed");
    assert!(body["error"].as_str().unwrap().contains("the models served are unchanged"), "{body}");
    let detail = &body["details"][0];
    assert_eq!(detail["path"], "/models/house_price/versions/1");
    let message = detail["message"].as_str().unwrap();
    assert!(message.contains("case 2, output 'price': expected"), "{message}");
    assert!(message.contains(&format!("expected {drifted}")), "names the expected value: {message}");

    let answer = app.predict(&[schema_example("house_price")]).await;
    assert_eq!(answer.status(), 200, "the old version still serves");
    let info = app.get_json("/models/house_price").await;
    assert!(info["last_load_error"]["error"].as_str().unwrap().contains("golden check"), "{info}");
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"inferd_model_loads_total{model="house_price",version="1",result="failed"} 1"#));
    assert!(metrics.contains(r#"inferd_reloads_total{result="failed"} 1"#));

    // Put back: the version serving is the one configured again, and the error is cleared.
    write_config(dir.path(), &[("1", "")]);
    let (status, report) = reload(&app).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("unchanged")), "{report}");
    assert!(app.get_json("/models/house_price").await["last_load_error"].is_null());

    // A config that no longer parses: refused, with the parser's message.
    std::fs::write(&path, "[server\n").unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!((status, body["error_type"].as_str()), (409, Some("reload_failed")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("is not valid"), "{body}");
    assert_eq!(app.predict(&[schema_example("house_price")]).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn without_access_control_only_a_direct_loopback_client_may_reload() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_from(&write_config(dir.path(), &[("1", "")])).await;
    for header in ["x-forwarded-for", "forwarded", "x-real-ip", "via"] {
        let response = app.client.post(app.url("/admin/reload")).header(header, "203.0.113.9").send().await.unwrap();
        assert_eq!(response.status(), 403, "a proxied request ({header})");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_type"], "forbidden");
    }
    let wrong = app.client.get(app.url("/admin/reload")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    app.stop().await;

    // A config built in memory has no file to read again.
    let app = TestApp::spawn().await;
    let (status, body) = reload(&app).await;
    assert_eq!((status, body["error_type"].as_str()), (409, Some("reload_failed")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("not read from a file"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_repository_api_unloads_and_loads_a_model_and_ready_follows_the_policy() {
    let mut config = crate::helpers::test_config();
    let app = TestApp::spawn_with(config.clone()).await;
    let post = |path: &str, body: Value| app.client.post(app.url(path)).json(&body).send();

    let unloaded = post("/v2/repository/models/house_price/unload", json!({})).await.unwrap();
    assert_eq!(unloaded.status(), 200);
    let report: Value = unloaded.json().await.unwrap();
    let changes = report["models"].as_array().unwrap();
    assert!(changes.contains(&json!({"model": "house_price", "version": "1", "result": "unloaded"})), "{report}");
    assert!(changes.contains(&json!({"model": "house_price_linear", "version": "1", "result": "unchanged"})));
    // The default model unloaded: /predict and its routes answer 503, the others serve.
    let refused = app.predict(&[schema_example("house_price")]).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_type"], "model_unloaded", "{body}");
    let other = app
        .post_json("/models/house_price_linear/predict", &json!({"instances": [schema_example("house_price_linear")]}))
        .await;
    assert_eq!(other.status(), 200);
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a model unloaded on purpose does not count");
    let index: Value = post("/v2/repository/index", json!({"ready": true})).await.unwrap().json().await.unwrap();
    assert_eq!(index, json!([{"name": "house_price_linear", "version": "1", "state": "READY"}]));
    let index: Value = post("/v2/repository/index", json!({})).await.unwrap().json().await.unwrap();
    assert!(index
        .as_array()
        .unwrap()
        .contains(&json!({"name": "house_price", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"})));

    // A load that brings its own model config is not how inferd loads models.
    let own = post("/v2/repository/models/house_price/load", json!({"parameters": {"config": "{}"}})).await.unwrap();
    assert_eq!(own.status(), 400);
    let body: Value = own.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("cannot bring a model config"), "{body}");
    let unknown = post("/v2/repository/models/nope/unload", json!({})).await.unwrap();
    assert_eq!(unknown.status(), 404);
    let bad = app.client.post(app.url("/v2/repository/index")).body("{").send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let loaded = app.client.post(app.url("/v2/repository/models/house_price/load")).send().await.unwrap();
    assert_eq!(loaded.status(), 200, "an empty body is an empty request");
    assert_eq!(app.predict(&[schema_example("house_price")]).await.status(), 200);
    assert_eq!(app.client.get(app.url("/ready")).send().await.unwrap().status(), 200);
    app.stop().await;

    // With ready_when = "any", one model serving is enough: house_price loses its only session
    // (and cannot rebuild it) while house_price_linear serves.
    config.server.ready_when = inferd::config::ReadyWhen::Any;
    let app = TestApp::spawn_with(config).await;
    let batcher = app.batcher("house_price");
    batcher.inject(inferd::batch::Fault::FailRebuild, 1_000_000);
    batcher.inject(inferd::batch::Fault::BreakSession, 1);
    let _ = app.predict(&[schema_example("house_price")]).await;
    for _ in 0..200 {
        if !batcher.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!batcher.is_ready(), "house_price has no working session");
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready_when = any");
    app.stop().await;
}

#[tokio::test]
async fn a_model_removed_from_the_config_while_unloaded_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inferd.toml");
    let model = |name: &str, extra: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\npath = \"{}\"\nschema = \"{}\"\n{extra}\n",
            repo().join(format!("models/{name}.onnx")).display(),
            repo().join(format!("schemas/{name}.json")).display()
        )
    };
    let head = format!("[server]\nport = 0\n[prediction_log]\ndirectory = \"{}\"\n", dir.path().join("logs").display());
    let both = format!("{head}{}{}", model("house_price", "default = true"), model("house_price_linear", ""));
    std::fs::write(&path, both).unwrap();
    let app = spawn_from(&path).await;
    let unloaded = app.client.post(app.url("/v2/repository/models/house_price_linear/unload")).send().await.unwrap();
    assert_eq!(unloaded.status(), 200);
    std::fs::write(&path, format!("{head}{}", model("house_price", "default = true"))).unwrap();
    let (status, report) = reload(&app).await;
    assert_eq!(status, 200, "{report}");
    let gone = app.post_json("/models/house_price_linear/predict", &json!({"instances": []})).await;
    assert_eq!(gone.status(), 404, "no longer configured: not found, rather than unloaded");
    let index: Value = app.client.post(app.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    assert_eq!(index, json!([{"name": "house_price", "version": "1", "state": "READY"}]));
    app.stop().await;
}

#[tokio::test]
async fn with_reload_watch_a_changed_config_file_is_reloaded_once_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &[("1", "")]);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("[reload]\nwatch = true\npoll_ms = 100\ndebounce_ms = 300\n{text}")).unwrap();
    let app = spawn_from(&path).await;
    let version_2 = async || app.client.get(app.url("/models/house_price/versions/2")).send().await.unwrap().status();
    assert_eq!(version_2().await, 404);
    write_config(dir.path(), &[("1", ""), ("2", "")]);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("[reload]\nwatch = true\npoll_ms = 100\ndebounce_ms = 300\n{text}")).unwrap();
    let mut status = 404;
    for _ in 0..100 {
        status = version_2().await.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the watch reloaded the new version");
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"inferd_reloads_total{result="ok"} 1"#), "one reload for the change: {metrics}");
    app.stop().await;
}
