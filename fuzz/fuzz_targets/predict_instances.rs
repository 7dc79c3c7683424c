//! `POST /predict` up to the model: parse the request, check every instance against the schema
//! and encode them. Nothing may panic or abort.
#![no_main]

use std::sync::LazyLock;

use inferd::http::predict::PredictRequest;
use libfuzzer_sys::fuzz_target;

mod common;

static MODELS: LazyLock<[common::Model; 2]> = LazyLock::new(common::models);

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<PredictRequest>(body) {
        for model in MODELS.iter() {
            common::check_and_encode(model, &request.instances);
        }
    }
});
