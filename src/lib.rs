//! inferd: serve ONNX models over HTTP with typed JSON, schema validation and dynamic batching.

pub mod auth;
pub mod batch;
pub mod check;
pub mod cli;
pub mod config;
pub mod decode;
pub mod error;
pub mod grpc;
pub mod http;
pub mod lifecycle;
pub mod model;
pub mod objects;
pub mod observe;
pub mod offline;
pub mod predlog;
pub mod probe;
pub mod reading;
pub mod registry;
pub mod schema;
pub mod serve;
pub mod service;
pub mod startup;
pub mod stdout;
pub mod telemetry;
pub mod tensor;

/// The OpenAPI document (it lives with the routes it describes).
pub use http::openapi;
