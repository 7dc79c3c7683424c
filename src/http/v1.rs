//! KServe V1 / TensorFlow Serving REST: `POST /v1/models/{name}:predict`.
