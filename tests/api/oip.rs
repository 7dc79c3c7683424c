use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{assert_close, house_tensors, reference, repo, TestApp};

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

/// A client nobody here wrote: NVIDIA's tritonclient, installed into `.venv` by scripts/test.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/oip/requirements.txt",
        python.display()
    );
    let app = TestApp::spawn().await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let script = repo().join("tests/oip/triton_client.py");
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(host).arg(repo()).output())
        .await
        .unwrap()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks ok"), "{stdout}");
    println!("{stdout}");
    app.stop().await;
}
