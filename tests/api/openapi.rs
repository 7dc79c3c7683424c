use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{repo, schema_example, test_config, TestApp};

fn committed() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("openapi.json")).expect("openapi.json is committed"))
        .unwrap()
}

#[test]
fn the_committed_document_is_current() {
    let generated = inferd::openapi::for_config(&test_config()).expect("models load");
    assert!(
        generated == committed(),
        "openapi.json is stale: regenerate it with `cargo run -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn the_server_serves_the_committed_document_and_swagger_ui() {
    let app = TestApp::spawn().await;
    assert!(app.get_json("/openapi.json").await == committed(), "the served document differs from openapi.json");
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let config = app.client.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(config.contains("/openapi.json"), "{config}");
    app.stop().await;
}

#[test]
fn every_reference_resolves() {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = committed();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{}", found.len());
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn each_model_has_its_own_operation_with_its_schema_and_example() {
    let doc = committed();
    let op = &doc["paths"]["/models/house_price/predict"]["post"];
    let body = &op["requestBody"]["content"]["application/json"];
    assert_eq!(
        body["schema"]["properties"]["instances"]["items"]["$ref"],
        "#/components/schemas/house_price.v1.Instance"
    );
    assert_eq!(body["example"]["instances"][0], schema_example("house_price"));
    let instance = &doc["components"]["schemas"]["house_price.v1.Instance"];
    assert_eq!(instance["properties"]["bedrooms"]["maximum"], 10);
    assert_eq!(instance["properties"]["airco"]["enum"], json!(["yes", "no"]));
    assert!(doc["paths"]["/models/house_price_linear/versions/1/predict"]["post"].is_object());
    assert_eq!(
        doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
            ["instances"]["items"]["$ref"],
        "#/components/schemas/house_price.v1.Instance"
    );
}

/// One request per documented operation, in the document's order: path parameters name
/// house_price version 1, a body is the documented example or else one valid instance. With
/// the operation's path, its entry, and whether it has an example.
fn every_operation<'a>(app: &TestApp, doc: &'a Value) -> Vec<(String, &'a Value, bool, reqwest::RequestBuilder)> {
    let mut requests = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = path.replace("{name}", "house_price").replace("{model}", "house_price").replace("{version}", "1");
            let mut request =
                app.client.request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), app.url(&url));
            let example = op["requestBody"]["content"]["application/json"]["example"].as_object();
            if let Some(example) = example {
                request = request.json(example);
            } else if method == "post" {
                request = request.json(&json!({"instances": [schema_example("house_price")]}));
            }
            requests.push((format!("{method} {url}"), op, example.is_some(), request));
        }
    }
    requests
}

/// Calls every documented operation and checks that the status returned is one the document
/// lists.
#[tokio::test]
async fn every_documented_operation_answers_with_a_documented_status() {
    let app = TestApp::spawn().await;
    let doc = committed();
    let mut called = 0;
    for (what, op, has_example, request) in every_operation(&app, &doc) {
        let status = request.send().await.unwrap().status().as_u16().to_string();
        assert!(op["responses"].get(&status).is_some(), "{what} returned {status}, not documented");
        if has_example {
            assert_eq!(status, "200", "{what}: the documented example (what Try it out sends) must work");
        }
        called += 1;
    }
    assert!(called >= 18, "only {called} operations called");
    app.stop().await;
}

/// With the default model unloaded (repository API), its routes answer 503 `model_unloaded`:
/// documented on each of them, as every other answer is.
#[tokio::test]
async fn with_a_model_unloaded_every_operation_answers_with_a_documented_status() {
    let app = TestApp::spawn().await;
    let unloaded = app.post_json("/v2/repository/models/house_price/unload", &json!({})).await;
    assert_eq!(unloaded.status(), 200);
    let doc = committed();
    let mut undocumented = Vec::new();
    let mut unavailable = 0;
    // The state-changing operations would load it again.
    let operations = every_operation(&app, &doc)
        .into_iter()
        .filter(|(what, ..)| !what.contains("/admin/") && !what.contains("/repository/models/"));
    for (what, op, _, request) in operations {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let body = response.text().await.unwrap();
        if op["responses"].get(&status).is_none() {
            undocumented.push(format!("{what} returned {status}, not documented: {body}"));
        }
        unavailable += usize::from(status == "503");
    }
    assert!(undocumented.is_empty(), "{}", undocumented.join("\n"));
    assert!(unavailable >= 15, "only {unavailable} operations answered 503: is house_price unloaded?");
    app.stop().await;
}

/// The checks schemathesis runs: no 5xx (504 aside: tests/openapi/schemathesis.toml says why),
/// every status documented for its operation, every answer in its documented schema.
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance";
/// Left out: the operations that change what is served (repository load/unload, reload); the
/// test counts the others the same way.
const STATE_CHANGING: &str = "^/(admin/|v2/repository/models/)";
/// For the second run: path parameters naming a served model and version, so that requests
/// get past the 404 to the headers and bodies.
const SERVED: &str =
    "\n[parameters]\n\"path.name\" = \"house_price\"\n\"path.model\" = \"house_price\"\n\"path.version\" = \"1\"\n";
/// Far above a run's length (about 30 s each here), so that only a hung run trips it.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(600);

/// schemathesis (tests/openapi/requirements.txt) generates requests from the served document,
/// valid and not, for every operation but the state-changing ones: twice, first with
/// generated path parameters (mostly unknown models), then with a served model and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_answer() {
    let schemathesis = repo().join(".venv/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt",
        schemathesis.display()
    );
    let settings = std::fs::read_to_string(repo().join("tests/openapi/schemathesis.toml")).unwrap();
    let app = TestApp::spawn().await;
    let url = app.url("/openapi.json");
    let doc = committed();
    let paths = doc["paths"].as_object().unwrap();
    let state_changing = |path: &str| path.starts_with("/admin/") || path.starts_with("/v2/repository/models/");
    let tested: usize =
        paths.iter().filter(|(p, _)| !state_changing(p)).map(|(_, item)| item.as_object().unwrap().len()).sum();
    for (run, config) in [("generated names", settings.clone()), ("served names", settings + SERVED)] {
        let (schemathesis, url) = (schemathesis.clone(), url.clone());
        let (ok, output) =
            tokio::task::spawn_blocking(move || run_schemathesis(&schemathesis, &config, &url)).await.unwrap();
        assert!(ok, "schemathesis ({run}) found answers the document does not describe:\n{output}");
        assert!(output.contains(&format!("Tested: {tested}\n")), "{run}: not every operation was tested:\n{output}");
    }
    app.stop().await;
}

/// Runs schemathesis against `url` with `config` in a scratch folder (it keeps a `.hypothesis`
/// database where it runs); whether it passed, and its output.
fn run_schemathesis(schemathesis: &Path, config: &str, url: &str) -> (bool, String) {
    let scratch = tempfile::tempdir().unwrap();
    let (config_file, log) = (scratch.path().join("schemathesis.toml"), scratch.path().join("output.txt"));
    std::fs::write(&config_file, config).unwrap();
    let mut child = std::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(&config_file)
        .args(["--no-color", "run", url, "--checks", SCHEMATHESIS_CHECKS, "--exclude-path-regex", STATE_CHANGING])
        // Bounded so that a run takes about half a minute; a fixed seed, so that a failure comes
        // back on the next run (and a new finding is a change, not chance).
        .args(["--max-examples", "20", "--seed", "18", "--request-timeout", "30"])
        .current_dir(scratch.path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("schemathesis starts");
    let deadline = Instant::now() + SCHEMATHESIS_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {SCHEMATHESIS_DEADLINE:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap_or_default())
}
