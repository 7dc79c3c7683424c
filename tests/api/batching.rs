use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Barrier;

use crate::helpers::{assert_close, reference, test_config, TestApp};

/// Fires `clients` concurrent one-row requests, each with a different reference row, and
/// checks that every client gets the prediction of its own row.
async fn fire_concurrently(app: &Arc<TestApp>, clients: usize) {
    let reference = Arc::new(reference("house_price.reference.json", "onnxruntime_price"));
    let barrier = Arc::new(Barrier::new(clients));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (app, reference, barrier) = (app.clone(), reference.clone(), barrier.clone());
            tokio::spawn(async move {
                let row = i % reference.instances.len();
                barrier.wait().await;
                let response = app.predict(&reference.instances[row..=row]).await;
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                let price = body["predictions"][0]["price"].as_f64().unwrap();
                assert_close(price, reference.expected[row], 1e-5, &format!("client {i} (row {row})"));
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_their_own_answers_from_shared_batches() {
    let app = Arc::new(TestApp::spawn().await);
    let before = app.get_json("/models/house_price").await["stats"].clone();
    let clients = 256;
    fire_concurrently(&app, clients).await;
    let after = app.get_json("/models/house_price").await["stats"].clone();
    let rows = after["rows"].as_u64().unwrap() - before["rows"].as_u64().unwrap();
    let batches = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    assert_eq!(rows, clients as u64, "every row ran exactly once");
    assert!(batches < rows, "rows were merged: {rows} rows in {batches} batches");
    assert!(after["largest_batch"].as_u64().unwrap() > 1, "{after}");
    Arc::into_inner(app).expect("no clients left").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_max_delay_gathers_fuller_batches() {
    let mut config = test_config();
    config.batching.max_delay_ms = 500;
    config.batching.max_batch_rows = 16;
    let app = Arc::new(TestApp::spawn_with(config).await);
    let before = app.get_json("/models/house_price").await["stats"].clone();
    fire_concurrently(&app, 32).await;
    let after = app.get_json("/models/house_price").await["stats"].clone();
    let batches = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    assert!(batches <= 4, "32 rows waited for each other: {batches} batches");
    assert_eq!(after["largest_batch"], 16, "{after}");
    Arc::into_inner(app).expect("no clients left").stop().await;
}

#[tokio::test]
async fn a_request_larger_than_a_batch_is_split_and_reassembled_in_order() {
    let mut config = test_config();
    config.batching.max_batch_rows = 5;
    let app = TestApp::spawn_with(config).await;
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let body: Value = app.predict(&reference.instances).await.json().await.unwrap();
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 32);
    for (i, prediction) in predictions.iter().enumerate() {
        assert_close(prediction["price"].as_f64().unwrap(), reference.expected[i], 1e-5, &format!("row {i}"));
    }
    let stats = app.get_json("/models/house_price").await["stats"].clone();
    assert_eq!(stats["largest_batch"], 5, "{stats}");
    assert!(stats["batches"].as_u64().unwrap() >= 7, "32 rows need at least 7 batches of 5: {stats}");
    app.stop().await;
}
