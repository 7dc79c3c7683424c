//! The HTTP metrics' handles, looked up once per (route, method, status) and then reused: the
//! labels are fixed sets (matched route templates, standard methods, status codes), so the
//! cache is bounded, and a request pays a read lock and two hashes instead of building label
//! strings and a registry key.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use metrics::{counter, histogram, Counter, Histogram};

use super::{Metrics, GRPC_REQUESTS_TOTAL, HTTP_REQUESTS_TOTAL, HTTP_REQUEST_DURATION_SECONDS};

type ByRoute = HashMap<String, HashMap<(&'static str, u16), (Histogram, Counter)>>;

#[derive(Default)]
pub(super) struct HttpHandles(RwLock<ByRoute>);

impl Metrics {
    /// One HTTP request: `method` is a fixed label (see `method_label`), `route` a matched
    /// template or `unmatched`.
    pub fn http_request(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let found = {
            let map = self.http.0.read().unwrap_or_else(|p| p.into_inner());
            map.get(route).and_then(|by| by.get(&(method, status))).cloned()
        };
        let (duration, requests) = found.unwrap_or_else(|| {
            let handles = self.with(|| {
                let route = route.to_owned();
                (
                    histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.clone()),
                    counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route, "status" => status.to_string()),
                )
            });
            let mut map = self.http.0.write().unwrap_or_else(|p| p.into_inner());
            map.entry(route.to_owned()).or_default().entry((method, status)).or_insert(handles).clone()
        });
        duration.record(elapsed);
        requests.increment(1);
    }

    /// One gRPC call's status: `method` and `code` are names from fixed sets (the service's
    /// methods, gRPC's codes). Counted besides [`Metrics::http_request`], which has its latency.
    pub fn grpc_request(&self, method: &'static str, code: &'static str) {
        self.with(|| counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => code)).increment(1);
    }
}
