use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{repo, schema_example, test_config, TestApp};

#[cfg(feature = "external-tools")]
mod schemathesis;

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
