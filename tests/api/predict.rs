use serde_json::{json, Value};

use crate::helpers::{assert_close, assert_error, instance_with, reference, schema_example, test_config, TestApp};

#[tokio::test]
async fn predictions_match_the_python_reference() {
    let app = TestApp::spawn().await;
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let response = app.predict(&reference.instances).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), reference.instances.len());
    for (i, prediction) in predictions.iter().enumerate() {
        let price = prediction["price"].as_f64().unwrap();
        assert_close(price, reference.expected[i], 1e-5, &format!("onnxruntime row {i}"));
        assert_close(price, reference.sklearn[i], 1e-3, &format!("scikit-learn row {i}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn matrix_input_model_matches_its_reference() {
    let app = TestApp::spawn().await;
    let reference = reference("house_price_linear.reference.json", "onnxruntime_variable");
    let response =
        app.post_json("/models/house_price_linear/predict", &json!({"instances": reference.instances})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "house_price_linear");
    for (i, prediction) in body["predictions"].as_array().unwrap().iter().enumerate() {
        assert_close(prediction["variable"].as_f64().unwrap(), reference.expected[i], 1e-5, &format!("row {i}"));
    }
    app.stop().await;
}

#[tokio::test]
async fn response_carries_model_version_and_the_request_id() {
    let app = TestApp::spawn().await;
    let example = schema_example("house_price");
    let response = app.predict(std::slice::from_ref(&example)).await;
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], header.as_str());
    assert_eq!((body["model"].as_str(), body["version"].as_str()), (Some("house_price"), Some("1")));
    assert!(body["predictions"][0]["price"].as_f64().unwrap() > 10_000.0);

    let response = app
        .client
        .post(app.url("/models/house_price/predict"))
        .header("x-request-id", "client-chosen-id-42")
        .json(&json!({"instances": [example]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "client-chosen-id-42");
    app.stop().await;
}

#[tokio::test]
async fn integers_written_as_3_0_mean_3() {
    let app = TestApp::spawn().await;
    let example = schema_example("house_price");
    let as_float = instance_with(&example, "bedrooms", json!(3.0));
    let body: Value = app.predict(&[example, as_float]).await.json().await.unwrap();
    assert_eq!(body["predictions"][0], body["predictions"][1], "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_model_without_a_schema_file_gets_one_derived_from_its_inputs() {
    let mut config = test_config();
    config.models.iter_mut().for_each(|m| m.schema = None);
    let app = TestApp::spawn_with(config).await;

    let info = app.get_json("/models/house_price").await;
    let properties = info["schema"]["properties"].as_object().unwrap();
    assert_eq!(properties["bedrooms"]["type"], "integer");
    assert_eq!(properties["lotsize"]["type"], "number");
    assert_eq!(properties["airco"]["type"], "string");
    let linear = app.get_json("/models/house_price_linear").await;
    let columns: Vec<&String> = linear["schema"]["properties"].as_object().unwrap().keys().collect();
    assert_eq!(columns, ["features_0", "features_1", "features_2", "features_3", "features_4"]);

    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let body: Value = app.predict(&reference.instances[..1]).await.json().await.unwrap();
    assert_close(
        body["predictions"][0]["price"].as_f64().unwrap(),
        reference.expected[0],
        1e-5,
        "derived schema row 0",
    );

    let wrong = instance_with(&reference.instances[0], "bedrooms", json!("three"));
    let body = assert_error(app.predict(&[wrong]).await, 422, "validation_error").await;
    assert_eq!(body["details"][0]["path"], "/instances/0/bedrooms");

    // Without an enum in the schema an unseen category reaches the graph, which refuses it:
    // that request gets 422, and a valid request sent alongside (often in the same batch) is still answered.
    let unseen = [instance_with(&reference.instances[0], "airco", json!("maybe"))];
    let (bad, good) = tokio::join!(app.predict(&unseen), app.predict(&reference.instances[..1]));
    let body = assert_error(bad, 422, "model_rejected_input").await;
    assert!(body["error"].as_str().unwrap().contains("Unknown Category"), "{body}");
    assert_eq!(good.status(), 200);
    app.stop().await;
}
