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

/// Calls every documented operation (path parameters filled with served names, bodies with the
/// documented example) and checks that the status returned is one the document lists.
#[tokio::test]
async fn every_documented_operation_answers_with_a_documented_status() {
    let app = TestApp::spawn().await;
    let doc = committed();
    let mut called = 0;
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
            let status = request.send().await.unwrap().status().as_u16().to_string();
            assert!(op["responses"].get(&status).is_some(), "{method} {url} returned {status}, not documented");
            if example.is_some() {
                assert_eq!(status, "200", "{method} {url}: the documented example (what Try it out sends) must work");
            }
            called += 1;
        }
    }
    assert!(called >= 18, "only {called} operations called");
    app.stop().await;
}
