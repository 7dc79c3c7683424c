//! Every element type inferd feeds, through `models/dtypes.onnx` (no schema file: derived).

use serde_json::{json, Value};

use crate::helpers::{assert_error, config_with_model, TestApp};

async fn app() -> TestApp {
    TestApp::spawn_with(config_with_model("dtypes", "dtypes.onnx", "1", false)).await
}

fn extremes() -> Value {
    json!({"u8": 255, "u16": 65535, "u32": 4294967295u64, "u64": u64::MAX, "i8": -128, "i16": -32768,
           "i32": -2147483648i64, "f16": 1.5, "f64": 0.25, "flag": true})
}

fn small() -> Value {
    json!({"u8": 1, "u16": 2, "u32": 3, "u64": 4, "i8": -5, "i16": 6, "i32": 7, "f16": 0.5, "f64": 0.25, "flag": true})
}

#[tokio::test]
async fn every_element_type_round_trips_through_predict() {
    let app = app().await;
    let info = app.get_json("/models/dtypes").await;
    assert_eq!(info["schema"]["properties"]["u8"]["type"], "integer");
    assert_eq!(info["schema"]["properties"]["f16"]["type"], "number");
    assert_eq!(info["schema"]["properties"]["flag"]["type"], "boolean");

    let response = app.post_json("/models/dtypes/predict", &json!({"instances": [extremes(), small()]})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let p = &body["predictions"];
    assert_eq!(p[0]["u8_echo"], 255);
    assert_eq!(p[0]["u64_echo"], json!(u64::MAX), "u64 survives JSON exactly");
    assert_eq!(p[0]["i8_echo"], -128);
    assert_eq!(p[0]["f16_echo"], 1.5);
    assert_eq!(p[0]["flag_echo"], true);
    assert_eq!(p[1]["sum"], 19.75, "1+2+3+4-5+6+7+0.5+0.25+1");

    let too_big = json!({"instances": [{"u8": 256, "u16": 0, "u32": 0, "u64": -1, "i8": 0, "i16": 0, "i32": 0, "f16": 0, "f64": 0, "flag": false}]});
    let body = assert_error(app.post_json("/models/dtypes/predict", &too_big).await, 422, "validation_error").await;
    assert_eq!(
        body["details"][0],
        json!({"path": "/instances/0/u8", "message": "must be an integer between 0 and 255, got 256"})
    );
    assert_eq!(
        body["details"][1],
        json!({"path": "/instances/0/u64", "message": "must be an integer between 0 and 18446744073709551615, got -1"})
    );
    app.stop().await;
}

#[tokio::test]
async fn every_protocol_datatype_is_accepted_and_returned() {
    let app = app().await;
    let meta = app.get_json("/v2/models/dtypes").await;
    let datatypes: Vec<&str> =
        meta["inputs"].as_array().unwrap().iter().map(|i| i["datatype"].as_str().unwrap()).collect();
    assert_eq!(datatypes, ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "FP16", "FP64", "BOOL"]);

    let row = small();
    let inputs: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!({"name": i["name"], "shape": [1, 1], "datatype": i["datatype"], "data": [row[i["name"].as_str().unwrap()]]}))
        .collect();
    let body: Value = app
        .post_json(
            "/v2/models/dtypes/infer",
            &json!({"inputs": inputs, "outputs": [{"name": "sum"}, {"name": "f16_echo"}, {"name": "flag_echo"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["outputs"][0], json!({"name": "sum", "shape": [1, 1], "datatype": "FP32", "data": [19.75]}));
    assert_eq!(body["outputs"][1], json!({"name": "f16_echo", "shape": [1, 1], "datatype": "FP16", "data": [0.5]}));
    assert_eq!(body["outputs"][2], json!({"name": "flag_echo", "shape": [1, 1], "datatype": "BOOL", "data": [true]}));
    assert_eq!(body["outputs"].as_array().unwrap().len(), 3, "the outputs filter applies");
    app.stop().await;
}

#[tokio::test]
async fn values_beyond_their_type_are_refused_by_range() {
    let app = app().await;
    // serde_json reads 2^64 as a float; the answer is about its range, not "must be an integer".
    let body = small().to_string().replace("\"u64\":4", "\"u64\":18446744073709551616");
    let response = app
        .client
        .post(app.url("/models/dtypes/predict"))
        .header("content-type", "application/json")
        .body(format!("{{\"instances\": [{body}]}}"))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 422, "validation_error").await;
    assert_eq!(
        body["details"],
        json!([{"path": "/instances/0/u64", "message": "must be an integer between 0 and 18446744073709551615, got 18446744073709551616"}])
    );

    let mut row = small();
    row["f16"] = json!(1e6);
    row["i8"] = json!(1e300);
    let body = assert_error(
        app.post_json("/models/dtypes/predict", &json!({"instances": [row]})).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(
        body["details"],
        json!([
            {"path": "/instances/0/i8", "message": "must be an integer between -128 and 127, got 1e+300"},
            {"path": "/instances/0/f16", "message": "must be a number between -65504 and 65504, got 1000000.0"},
        ])
    );

    // The same through the protocol: 400 naming the tensor position, never a null output.
    let meta = app.get_json("/v2/models/dtypes").await;
    let inputs: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            let value = if name == "f16" { json!(65505) } else { small()[name].clone() };
            json!({"name": name, "shape": [1, 1], "datatype": i["datatype"], "data": [value]})
        })
        .collect();
    let response = app.post_json("/v2/models/dtypes/infer", &json!({"inputs": inputs})).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error["error"],
        "1 invalid field(s) in the request: f16[0]: must be a number between -65504 and 65504, got 65505"
    );
    // And the server still answers.
    let response = app.post_json("/models/dtypes/predict", &json!({"instances": [small()]})).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}
