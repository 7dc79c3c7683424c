//! Classifier probabilities keyed by class: the class names come from the graph (skl2onnx
//! writes them into its classifier nodes) or from the config's `labels`.

use serde_json::{json, Value};

use crate::helpers::{assert_close, config_with_model, repo, TestApp};

fn iris(labels: Option<Vec<String>>) -> inferd::config::Config {
    let mut config = config_with_model("iris", "iris.onnx", "1", true);
    let model = config.models.last_mut().unwrap();
    model.schema = Some(repo().join("schemas/iris.json"));
    model.probabilities_by_class = true;
    model.labels = labels;
    config.check().expect("valid config");
    config
}

#[tokio::test]
async fn probabilities_are_keyed_by_the_graphs_class_names() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/iris.reference.json")).unwrap()).unwrap();
    let app = TestApp::spawn_with(iris(None)).await;
    let instances = reference["instances"].clone();
    let response = app.post_json("/models/iris/predict", &json!({"instances": instances})).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let classes: Vec<&str> = reference["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(classes, ["setosa", "versicolor", "virginica"]);
    for (i, prediction) in answer["predictions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(prediction["label"], reference["onnxruntime_label"][i], "row {i}");
        let probabilities = prediction["probabilities"].as_object().expect("an object keyed by class");
        let keys: Vec<&str> = probabilities.keys().map(String::as_str).collect();
        assert_eq!(keys, classes, "in the model's column order");
        for (k, class) in classes.iter().enumerate() {
            let want = reference["onnxruntime_probabilities"][i][k].as_f64().unwrap();
            assert_close(probabilities[*class].as_f64().unwrap(), want, 1e-5, &format!("row {i} {class}"));
        }
    }
    // The tensor protocol keeps tensors.
    let v2 =
        json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let tensors: Value = app.post_json("/v2/models/iris/infer", &v2).await.json().await.unwrap();
    let out = tensors["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(out["shape"], json!([1, 3]));
    app.stop().await;
}

#[tokio::test]
async fn config_labels_win_and_must_match_the_class_count() {
    let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect());
    let app = TestApp::spawn_with(iris(names(&["a", "b", "c"]))).await;
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    let answer: Value = app.post_json("/models/iris/predict", &body).await.json().await.unwrap();
    let keys: Vec<&String> = answer["predictions"][0]["probabilities"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["a", "b", "c"]);
    // The predicted class is named by the same labels (the graph says "setosa", column 0).
    assert_eq!(answer["predictions"][0]["label"], "a", "{answer}");
    let v1: Value = app.post_json("/v1/models/iris:predict", &body).await.json().await.unwrap();
    assert_eq!(v1["predictions"][0]["label"], "a", "{v1}");
    let virginica = json!({"instances": [[6.3, 3.3, 6.0, 2.5]]});
    let answer: Value = app.post_json("/models/iris/predict", &virginica).await.json().await.unwrap();
    assert_eq!(answer["predictions"][0]["label"], "c", "{answer}");
    app.stop().await;

    let config = iris(names(&["a", "b"]));
    let env = inferd::model::init_runtime(&config.inference).unwrap();
    let entry = config.models.last().unwrap();
    let Err(err) = inferd::model::load(&env, entry, &config.inference) else { panic!("two labels for three classes") };
    assert!(err.to_string().contains("model 'iris'") && err.to_string().contains('3'), "{err}");
}
