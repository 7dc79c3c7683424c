//! Integration tests: one binary, modules by topic. Each test starts the real application on
//! port 0 with the committed models and talks HTTP to it.

mod architecture;
mod auth;
mod batching;
mod classes;
mod config_reference;
mod connections;
mod cors;
mod dtypes;
mod environment;
mod errors;
mod faults;
mod fuzz;
mod grpc;
mod helpers;
mod hostile;
mod http2;
mod metrics;
mod model_sources;
mod named;
mod offline;
mod oip;
mod openapi;
mod predict;
mod predlog;
mod probe;
mod process;
mod registry;
mod reload;
mod renames;
mod rollout;
mod schema_command;
mod shapes;
mod sinks;
mod traces;
mod v1;
