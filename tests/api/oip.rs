use serde_json::{json, Value};

use crate::helpers::{assert_close, config_with_model, house_tensors, reference, TestApp};

#[cfg(feature = "external-tools")]
mod tritonclient;

#[tokio::test]
async fn health_and_metadata_follow_the_protocol() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get_json("/v2/health/live").await, json!({"live": true}));
    assert_eq!(app.get_json("/v2/health/ready").await, json!({"ready": true}));
    let server = app.get_json("/v2").await;
    assert_eq!(server["name"], "inferd");
    let meta = app.get_json("/v2/models/house_price").await;
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"][0], json!({"name": "lotsize", "datatype": "FP32", "shape": [-1, 1]}));
    assert_eq!(meta["outputs"][0], json!({"name": "price", "datatype": "FP32", "shape": [-1, 1]}));
    let linear = app.get_json("/v2/models/house_price_linear/versions/1").await;
    assert_eq!(linear["inputs"][0], json!({"name": "features", "datatype": "FP32", "shape": [-1, 5]}));
    assert_eq!(app.get_json("/v2/models/house_price/versions/1/ready").await, json!({"ready": true}));
    let missing = app.client.get(app.url("/v2/models/nope/ready")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("'nope'"));
    app.stop().await;
}

#[tokio::test]
async fn infer_matches_the_reference_and_shares_the_batcher() {
    let app = TestApp::spawn().await;
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let before = app.get_json("/models/house_price").await["stats"]["rows"].as_u64().unwrap();
    // No content type: standard clients do not always send one.
    let response = app
        .client
        .post(app.url("/v2/models/house_price/infer"))
        .body(house_tensors(&reference.instances).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["model_name"].as_str(), body["model_version"].as_str(), body["id"].as_str()),
        (Some("house_price"), Some("1"), Some("req-7"))
    );
    let out = &body["outputs"][0];
    assert_eq!((out["name"].as_str(), out["datatype"].as_str()), (Some("price"), Some("FP32")));
    assert_eq!(out["shape"], json!([32, 1]));
    for (i, v) in out["data"].as_array().unwrap().iter().enumerate() {
        assert_close(v.as_f64().unwrap(), reference.expected[i], 1e-5, &format!("row {i}"));
    }
    let after = app.get_json("/models/house_price").await["stats"]["rows"].as_u64().unwrap();
    assert_eq!(after - before, 32, "tensor rows went through the model's batcher");
    app.stop().await;
}

#[tokio::test]
async fn bad_tensor_requests_are_400_with_the_protocol_error_shape() {
    let app = TestApp::spawn().await;
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    let good = house_tensors(&rows[..2]);
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut b = good.clone();
                b["inputs"][0]["data"] = json!([1.0]);
                b
            },
            "needs 2 values, data has 1",
        ),
        (
            {
                let mut b = good.clone();
                b["inputs"][1]["datatype"] = json!("FP64");
                b
            },
            "datatype FP64 does not match the model's INT64",
        ),
        (
            {
                let mut b = good.clone();
                b["inputs"][0]["name"] = json!("area");
                b
            },
            "unknown input 'area'",
        ),
        (
            {
                let mut b = good.clone();
                b["inputs"][1]["data"] = json!([3, 14]);
                b
            },
            "bedrooms[1]: must be <= 10, got 14",
        ),
        (
            {
                let mut b = good.clone();
                b["inputs"][10]["data"] = json!(["no", "maybe"]);
                b
            },
            "prefarea[1]: must be one of",
        ),
        (
            {
                let mut b = good.clone();
                b["outputs"] = json!([{"name": "cost"}]);
                b
            },
            "unknown output 'cost'",
        ),
        (json!({"inputs": "x"}), "not a valid inference request"),
    ];
    for (body, expected) in cases {
        let response = app.client.post(app.url("/v2/models/house_price/infer")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{expected}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error.as_object().unwrap().len(), 1, "only `error`: {error}");
        assert!(error["error"].as_str().unwrap().contains(expected), "{error} lacks {expected}");
    }
    let response =
        app.client.post(app.url("/v2/models/house_price/versions/9/infer")).json(&good).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("no version '9'"));
    app.stop().await;
}

/// Posts to `/v2/models/{model}/infer` and returns the protocol error (status 400, only `error`).
async fn refused(app: &TestApp, model: &str, body: &Value) -> String {
    let response = app.post_json(&format!("/v2/models/{model}/infer"), body).await;
    assert_eq!(response.status(), 400, "{body}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error.as_object().unwrap().len(), 1, "only `error`: {error}");
    error["error"].as_str().unwrap().to_owned()
}

fn features(shape: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "features", "shape": shape, "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn hostile_shapes_are_400_before_memory_is_touched_and_the_server_lives_on() {
    let app = TestApp::spawn().await;
    let row = json!([5000.0, 3, 1, 2, 0]);
    let cases: Vec<(Value, String)> = vec![
        (
            features(json!([1_000_000_000_000i64, 5]), row.clone()),
            "input 'features': 1000000000000 rows, more than the limit of 1024 instances per request".into(),
        ),
        (
            features(json!([3_689_348_814_741_910_324i64, 5]), row.clone()),
            "input 'features': 3689348814741910324 rows, more than the limit of 1024 instances per request".into(),
        ),
        (
            features(json!([5000, 5]), row.clone()),
            "input 'features': 5000 rows, more than the limit of 1024 instances per request".into(),
        ),
        (features(json!([-1, 5]), row.clone()), "input 'features': shape [-1, 5] has a negative dimension -1".into()),
        (
            features(json!([1, 1, 5]), row.clone()),
            "input 'features': shape [1, 1, 5] has 3 dimensions, the model's [N, 5] has 2".into(),
        ),
        (
            features(json!([1, 5, 1]), row.clone()),
            "input 'features': shape [1, 5, 1] has 3 dimensions, the model's [N, 5] has 2".into(),
        ),
        (
            features(json!([1, 5]), json!([[[5000.0, 3, 1, 2, 0]]])),
            "input 'features': data is neither flat nor nested like shape [1, 5]: an array where shape needs a value at line 1 column 19"
                .into(),
        ),
        (
            features(json!([2, 5]), json!([[5000.0, 3, 1, 2, 0], [5000.0, 3, 1, 2]])),
            "input 'features': data is neither flat nor nested like shape [2, 5]: an array at depth 1 holds 4 items, shape says 5 at line 1 column 32"
                .into(),
        ),
        (
            {
                let mut body = features(json!([1, 5]), row.clone());
                body["inputs"] = json!([body["inputs"][0], body["inputs"][0]]);
                body
            },
            "input 'features' is given more than once".into(),
        ),
        (
            {
                let mut body = features(json!([1, 5]), row.clone());
                body["outputs"] = json!([{"name": "variable"}, {"name": "variable"}]);
                body
            },
            "output 'variable' is requested more than once".into(),
        ),
        (
            {
                let mut body = features(json!([1, 5]), row.clone());
                body["inputs"][0]["name"] = json!("n".repeat(1_000_000));
                body
            },
            format!("unknown input '{}… (1000000 chars)'", "n".repeat(100)),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(refused(&app, "house_price_linear", &body).await, expected);
    }
    // Still serving.
    let response = app.post_json("/v2/models/house_price_linear/infer", &features(json!([1, 5]), row)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outputs"][0]["shape"], json!([1, 1]));
    app.stop().await;
}

#[tokio::test]
async fn v2_rows_count_against_the_instance_limit() {
    let mut config = crate::helpers::test_config();
    config.server.max_instances_per_request = 2;
    let app = TestApp::spawn_with(config).await;
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    let error = refused(&app, "house_price", &house_tensors(&rows[..3])).await;
    assert_eq!(error, "input 'lotsize': 3 rows, more than the limit of 2 instances per request");
    let response = app.post_json("/v2/models/house_price/infer", &house_tensors(&rows[..2])).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn values_beyond_fp32_are_refused_with_their_position() {
    // No schema file: the derived schema has no bounds, so the element type's range decides.
    let app = TestApp::spawn_with(config_with_model("linear_raw", "house_price_linear.onnx", "1", false)).await;
    let error = refused(&app, "linear_raw", &features(json!([1, 5]), json!([1e300, 3, 1, 2, 0]))).await;
    assert_eq!(
        error,
        "1 invalid field(s) in the request: features_0[0]: must be a number between -3.4028235e38 and 3.4028235e38, got 1e+300"
    );
    let response =
        app.post_json("/v2/models/linear_raw/infer", &features(json!([1, 5]), json!([3.4e38, 3, 1, 2, 0]))).await;
    assert_eq!(response.status(), 200, "f32::MAX and below pass");
    app.stop().await;
}

/// The binary tensor data extension, its sizes and what it may not carry.
#[tokio::test]
async fn binary_tensor_data_is_held_to_its_sizes() {
    let app = TestApp::spawn().await;
    let url = app.url("/v2/models/house_price_linear/infer");
    let send = |header: Value, data: Vec<u8>, lengths: Vec<String>| {
        let header = header.to_string().into_bytes();
        let mut request = app.client.post(url.clone()).header("content-type", "application/octet-stream");
        let lengths = if lengths.is_empty() { vec![header.len().to_string()] } else { lengths };
        for length in lengths {
            request = request.header("inference-header-content-length", length);
        }
        request.body([header, data].concat()).send()
    };
    let row = |values: [f32; 5]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let input = |extra: Value| {
        let mut input =
            json!({"name": "features", "shape": [1, 5], "datatype": "FP32", "parameters": {"binary_data_size": 20}});
        input.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"inputs": [input], "outputs": [{"name": "variable", "parameters": {"binary_data": true}}]})
    };
    let ok = send(input(json!({})), row([5850.0, 3.0, 1.0, 2.0, 1.0]), vec![]).await.unwrap();
    assert_eq!(ok.status(), 200);
    let length: usize = ok.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = ok.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&body[..length]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 4);
    let price = f32::from_le_bytes(body[length..].try_into().unwrap());
    assert!(price > 10_000.0, "{price}");

    let refused = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 400);
        response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned()
    };
    let both = send(input(json!({"data": [1, 2, 3, 4, 5]})), row([5850.0, 3.0, 1.0, 2.0, 1.0]), vec![]);
    assert!(refused(both.await.unwrap()).await.contains("has both `data` and `parameters.binary_data_size`"));
    let nan = send(input(json!({})), row([f32::NAN, 3.0, 1.0, 2.0, 1.0]), vec![]);
    assert!(refused(nan.await.unwrap()).await.contains("must be a finite number, got NaN"));
    let header_len = input(json!({})).to_string().len().to_string();
    let twice = send(input(json!({})), row([5850.0, 3.0, 1.0, 2.0, 1.0]), vec![header_len.clone(), header_len.clone()]);
    assert!(refused(twice.await.unwrap()).await.contains("is given more than once"));
    let plus = send(input(json!({})), row([5850.0, 3.0, 1.0, 2.0, 1.0]), vec![format!("+{header_len}")]);
    assert!(refused(plus.await.unwrap()).await.contains("must be a whole number of bytes"));
    let mut not_bool = input(json!({}));
    not_bool["parameters"] = json!({"binary_data_output": "yes"});
    let response = send(not_bool, row([5850.0, 3.0, 1.0, 2.0, 1.0]), vec![]);
    assert!(refused(response.await.unwrap()).await.contains("parameters.binary_data_output must be true or false"));
    app.stop().await;
}

/// A request split over several batches gets each output as one tensor, in row order.
#[tokio::test]
async fn a_request_over_several_batches_is_answered_as_one_tensor() {
    let mut config = crate::helpers::test_config();
    config.batching.max_batch_rows = 3;
    let app = TestApp::spawn_with(config).await;
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let rows = &reference.instances[..10];
    let body: Value = app.post_json("/v2/models/house_price/infer", &house_tensors(rows)).await.json().await.unwrap();
    let out = &body["outputs"][0];
    assert_eq!(out["shape"], json!([10, 1]));
    for (i, v) in out["data"].as_array().unwrap().iter().enumerate() {
        assert_close(v.as_f64().unwrap(), reference.expected[i], 1e-5, &format!("row {i}"));
    }
    assert!(app.get_json("/models/house_price").await["stats"]["batches"].as_u64().unwrap() >= 4, "split in batches");
    app.stop().await;
}
