//! `POST /predict` up to the model: decode the body into rows, every field checked. Nothing may
//! panic or abort, and what is accepted must satisfy the schema as jsonschema reads it.
#![no_main]

use std::sync::LazyLock;

use inferd::decode::{self, Envelope};
use libfuzzer_sys::fuzz_target;

mod common;

static MODELS: LazyLock<[common::Model; 2]> = LazyLock::new(common::models);

fuzz_target!(|body: &[u8]| {
    for model in MODELS.iter() {
        for envelope in [Envelope::Predict, Envelope::V1] {
            if let Ok((rows, _)) = decode::body(model.decoding(), body, envelope, common::MAX_ROWS) {
                common::agrees_with_jsonschema(model, &rows);
            }
        }
    }
});
