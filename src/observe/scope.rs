//! Which request a service-log line was written in, without a tracing span per request.
//!
//! A span per request cost its registration, its fields recorded as JSON, and an enter and an
//! exit on every poll of the request's future. The request's method, path and id are instead
//! kept in a task-local while the request runs; the service log's formatters read it for each
//! line, so a line logged while serving a request (an internal error, a refused row) still
//! carries `"span":{"method","name","path","request_id"}`, or `request{...}:` as text, exactly as
//! it did with a span.

use std::future::Future;

use axum::http::{HeaderValue, Uri};
use serde::ser::{Serialize, SerializeStruct, Serializer};

tokio::task_local! {
    static CURRENT: RequestScope;
}

/// The name the request's fields are logged under (it was the span's name).
pub const NAME: &str = "request";

/// What every line logged while serving a request says about it. Cheap to clone: the URI and
/// the id share the request's bytes.
#[derive(Clone, Debug)]
pub struct RequestScope {
    /// A fixed label (see `http::track::method_label`).
    pub method: &'static str,
    uri: Uri,
    request_id: HeaderValue,
}

impl RequestScope {
    pub fn new(method: &'static str, uri: Uri, request_id: HeaderValue) -> Self {
        Self { method, uri, request_id }
    }

    /// The path as logged: cut to 256 bytes, so that a long URI cannot bloat the request's lines.
    pub fn path(&self) -> &str {
        const MAX: usize = 256;
        let path = self.uri.path();
        if path.len() <= MAX {
            return path;
        }
        let mut end = MAX;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        &path[..end]
    }

    /// The id is a UUID or a client's id that passed `http::usable_request_id` (visible ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// Runs `future` with this request as the one its log lines are written in.
    pub fn run<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// Runs `f` with this request as the one its log lines are written in.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// Calls `f` with the request being served on this thread, if any.
    pub fn with_current<T>(f: impl FnOnce(Option<&RequestScope>) -> T) -> T {
        let mut f = Some(f);
        match CURRENT.try_with(|scope| (f.take().expect("called once"))(Some(scope))) {
            Ok(out) => out,
            Err(_) => (f.take().expect("not called yet"))(None),
        }
    }

    /// The text log's prefix, as tracing-subscriber wrote the span: `request{method="POST"
    /// path=/predict request_id=…}: `.
    pub fn write_text_prefix(&self, out: &mut String) {
        use std::fmt::Write;
        let _ =
            write!(out, "{NAME}{{method={:?} path={} request_id={}}}: ", self.method, self.path(), self.request_id());
    }
}

/// The JSON log's `span` object: the span's fields and its name, in key order.
impl Serialize for RequestScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut span = serializer.serialize_struct("span", 4)?;
        span.serialize_field("method", self.method)?;
        span.serialize_field("name", NAME)?;
        span.serialize_field("path", self.path())?;
        span.serialize_field("request_id", self.request_id())?;
        span.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(path: &str) -> RequestScope {
        RequestScope::new("POST", path.parse().unwrap(), HeaderValue::from_static("id-1"))
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let long = format!("/{}", "é".repeat(200));
        let scope = scope(&long);
        assert!(scope.path().len() <= 256 && long.starts_with(scope.path()), "{}", scope.path());
        assert_eq!(self::scope("/predict?x=1").path(), "/predict");
    }

    #[test]
    fn the_span_object_keeps_its_keys_and_order() {
        let json = serde_json::to_string(&scope("/predict")).unwrap();
        assert_eq!(json, r#"{"method":"POST","name":"request","path":"/predict","request_id":"id-1"}"#);
        let mut text = String::new();
        scope("/predict").write_text_prefix(&mut text);
        assert_eq!(text, r#"request{method="POST" path=/predict request_id=id-1}: "#);
    }

    #[tokio::test]
    async fn the_scope_is_seen_inside_only() {
        let seen = || RequestScope::with_current(|s| s.map(|s| s.request_id().to_owned()));
        assert_eq!(seen(), None);
        let inside = scope("/x").run(async move { seen() }).await;
        assert_eq!(inside.as_deref(), Some("id-1"));
        assert_eq!(scope("/x").enter(seen).as_deref(), Some("id-1"));
        assert_eq!(seen(), None);
    }
}
