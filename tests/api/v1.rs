//! KServe V1 / TensorFlow Serving REST, with the bodies their clients send: the row format
//! (`instances`, with `signature_name` as TensorFlow Serving's examples add it) and the
//! columnar format (`inputs`), answered `predictions` and `outputs`.

use serde_json::{json, Value};

use crate::helpers::{assert_close, assert_error, reference, schema_example, TestApp};

async fn post(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    // As `curl -d` sends it: a form encoding, read as JSON.
    app.client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_and_columns_are_predicted_as_tensorflow_serving_answers_them() {
    let app = TestApp::spawn().await;
    let linear = reference("house_price_linear.reference.json", "onnxruntime_variable");
    // Plain rows, in the schema's property order, for the one-input model.
    let rows: Vec<Value> =
        linear.instances.iter().map(|i| Value::Array(i.as_object().unwrap().values().cloned().collect())).collect();
    let body = json!({"signature_name": "serving_default", "instances": rows}).to_string();
    let response = post(&app, "/v1/models/house_price_linear:predict", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), linear.expected.len());
    for (i, p) in predictions.iter().enumerate() {
        // One output, one value per row: the value itself, as TensorFlow Serving writes it.
        assert_close(p.as_f64().unwrap(), linear.expected[i], 1e-5, &format!("row {i}"));
    }
    // The columnar form, keyed by the input's name, answered `outputs`.
    let body = json!({"inputs": {"features": rows}}).to_string();
    let answer: Value =
        post(&app, "/v1/models/house_price_linear/versions/1:predict", &body).await.json().await.unwrap();
    let outputs = answer["outputs"].as_array().unwrap();
    assert_close(outputs[3].as_f64().unwrap(), linear.expected[3], 1e-5, "columnar row 3");

    // Objects for the many-input model; columns keyed by field.
    let house = reference("house_price.reference.json", "onnxruntime_price");
    let body = json!({"instances": house.instances[..3]}).to_string();
    let answer: Value = post(&app, "/v1/models/house_price:predict", &body).await.json().await.unwrap();
    assert_close(answer["predictions"][2].as_f64().unwrap(), house.expected[2], 1e-5, "house row 2");
    let mut columns = serde_json::Map::new();
    for field in house.instances[0].as_object().unwrap().keys() {
        columns.insert(field.clone(), house.instances[..3].iter().map(|i| i[field].clone()).collect());
    }
    let body = json!({"inputs": columns}).to_string();
    let answer: Value = post(&app, "/v1/models/house_price:predict", &body).await.json().await.unwrap();
    assert_close(answer["outputs"][1].as_f64().unwrap(), house.expected[1], 1e-5, "house columns row 1");
    app.stop().await;
}

#[tokio::test]
async fn status_errors_and_unknown_verbs() {
    let app = TestApp::spawn().await;
    let status = app.get_json("/v1/models/house_price").await;
    assert_eq!(
        status,
        json!({"name": "house_price", "ready": true, "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]})
    );
    let body = json!({"instances": [{"lotsize": "big"}]}).to_string();
    let error = assert_error(post(&app, "/v1/models/house_price:predict", &body).await, 422, "validation_error").await;
    assert_eq!(error["details"][0]["path"], "/instances/0/lotsize");
    let body = json!({"instances": [schema_example("house_price")]}).to_string();
    assert_error(post(&app, "/v1/models/house_price:classify", &body).await, 404, "not_found").await;
    assert_error(post(&app, "/v1/models/nope:predict", &body).await, 404, "model_not_found").await;
    let both = json!({"instances": [schema_example("house_price")], "inputs": {}}).to_string();
    assert_error(post(&app, "/v1/models/house_price:predict", &both).await, 422, "invalid_request").await;
    // `/predict` takes only its own envelope.
    let columnar = json!({"inputs": {"lotsize": [5000]}});
    assert_error(app.post_json("/predict", &columnar).await, 422, "invalid_request").await;
    app.stop().await;
}

#[tokio::test]
async fn plain_rows_work_on_predict_too_and_floats_print_shortest() {
    let app = TestApp::spawn().await;
    let response =
        app.post_json("/models/house_price_linear/predict", &json!({"instances": [[5850, 3, 1, 2, 1]]})).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let price = text.split("\"variable\":").nth(1).unwrap().split('}').next().unwrap();
    // The f32 output's shortest text: at most 9 significant digits, never the f64 widening.
    let digits = price.trim_start_matches('-').replace('.', "").trim_matches('0').len();
    assert!(digits <= 9, "{price} in {text}");
    assert_eq!(price.parse::<f32>().unwrap().to_string(), price, "{text}");
    let short = app.post_json("/models/house_price_linear/predict", &json!({"instances": [[5850, 3]]})).await;
    let error = assert_error(short, 422, "validation_error").await;
    assert_eq!(error["details"][0]["message"], "a plain row must hold 5 values, got 2");
    app.stop().await;
}

#[tokio::test]
async fn columnar_bodies_are_checked_like_instances() {
    let app = TestApp::spawn().await;
    let model = "/v1/models/house_price_linear:predict";
    // A column given twice is refused, not settled by whichever comes last.
    let twice = r#"{"inputs": {"features": [[5850, 3, 1, 2, 1]], "features": [[1, 1, 1, 1, 1]]}}"#;
    let error = assert_error(post(&app, model, twice).await, 422, "validation_error").await;
    assert_eq!(error["details"][0], json!({"path": "/inputs/features", "message": "is given more than once"}));
    let fields = r#"{"inputs": {"lotsize": [5850], "lotsize": [99999], "bedrooms": [3], "bathrms": [1], "stories": [2], "garagepl": [1]}}"#;
    let error = assert_error(post(&app, model, fields).await, 422, "validation_error").await;
    assert_eq!(error["details"][0]["path"], "/inputs/lotsize");
    // What was wrong is said, rather than "0 instances".
    for (body, path) in [
        (r#"{"inputs": 5}"#, "/inputs"),
        (r#"{"inputs": null}"#, "/inputs"),
        (r#"{"inputs": {"features": 5850}}"#, "/inputs/features"),
        (r#"{"inputs": {"nope": [1]}}"#, "/inputs/nope"),
    ] {
        let error = assert_error(post(&app, model, body).await, 422, "validation_error").await;
        assert_eq!(error["details"][0]["path"], path, "{body}: {error}");
    }
    // Ragged columns: the columns that disagree are reported, and nothing about rows.
    let ragged =
        r#"{"inputs": {"lotsize": [5850], "bedrooms": [3], "bathrms": [1], "stories": [2], "garagepl": [1, 2]}}"#;
    let error = assert_error(post(&app, model, ragged).await, 422, "validation_error").await;
    assert_eq!(error["details"], json!([{"path": "/inputs/garagepl", "message": "has 2 values, other inputs have 1"}]));
    // `signature_name` is a string.
    let body = r#"{"signature_name": 1, "instances": [[5850, 3, 1, 2, 1]]}"#;
    assert_error(post(&app, model, body).await, 422, "invalid_request").await;
    // One error per bad value: 150 of them are "more than 100".
    let many = format!("{{\"instances\": [{}]}}", vec![r#"{"lotsize": "a"}"#; 30].join(","));
    let error = assert_error(post(&app, model, &many).await, 422, "validation_error").await;
    assert!(error["error"].as_str().unwrap().starts_with("more than 100 invalid fields"), "{error}");
    assert_eq!(error["details"].as_array().unwrap().len(), 100);
    // A version's status, and a verb error that names the whole path.
    let status = app.get_json("/v1/models/house_price/versions/1").await;
    assert_eq!(status["model_version_status"][0]["version"], "1");
    let error = assert_error(post(&app, "/v1/models/house_price/versions/1", "{}").await, 404, "not_found").await;
    assert!(error["error"].as_str().unwrap().contains("/v1/models/house_price/versions/1"), "{error}");
    app.stop().await;
}
