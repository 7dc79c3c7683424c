//! `POST /v2/models/{model}/infer` up to the model: parse the request, cut the tensors into
//! instances, check and encode them. Nothing may panic or abort.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

mod common;

static MODELS: LazyLock<[common::Model; 2]> = LazyLock::new(common::models);

fuzz_target!(|body: &[u8]| {
    for model in MODELS.iter() {
        if let Ok(instances) = inferd::http::v2::fuzzing::decode(&model.plan, body, common::MAX_ROWS) {
            common::check_and_encode(model, &instances);
        }
    }
});
