//! OpenTelemetry traces: off unless an OTLP endpoint is set in the environment
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Off, nothing here runs on the request path but [`enabled`], one atomic load: no span, no
//! context, no header parsed. On, each HTTP request gets a server span (a child of the caller's
//! W3C `traceparent`), and the predict service adds child spans for reading the body, decoding,
//! queue wait, inference and the prediction-log hand-off. The OpenTelemetry API is used directly
//! rather than through `tracing-opentelemetry`: the service log has no span per request (see
//! [`super::scope`]), and a tracing span per request is the cost that was taken out.
//!
//! Spans are recorded leanly: a request's spans are the SDK's export records ([`SpanData`]),
//! filled in once when each span ends, rather than the SDK's `Span` objects, which take a lock
//! for every change, clone their instrumentation scope at the end and go through a span
//! processor. What decides is still the SDK's: its sampler and id generator, as its default
//! configuration reads them from the environment (`OTEL_TRACES_SAMPLER`, ...), its W3C
//! propagator, and the OTLP exporter. The sampler decides the request's span; its children
//! follow that decision, as the parent-based sampler would decide them (the trace-id ratio
//! sampler decides a trace's spans alike too). The request's trace is a task-local while its
//! future runs, like [`super::scope::RequestScope`].
//!
//! Finished spans go to a bounded queue and leave in batches through OTLP/HTTP (protobuf) on a
//! thread of their own ([`export`]): a span that finds the queue full is dropped and counted
//! ([`dropped_spans`], the metric `inferd_trace_spans_dropped_total`), never waited for.

mod export;

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SamplingDecision, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceId};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Config, IdGenerator, ShouldSample, SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;

use export::{BatchSettings, Queue};
pub use export::dropped_spans;

/// What spans are made with, set once per process when tracing is on (like the service log's
/// subscriber).
static TRACER: OnceLock<Tracer> = OnceLock::new();

#[derive(Debug)]
struct Tracer {
    sampler: Box<dyn ShouldSample>,
    ids: Box<dyn IdGenerator>,
    /// `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, as the SDK reads it.
    max_attributes: usize,
    /// `inferd`, as every span names it.
    scope: InstrumentationScope,
    queue: Arc<Queue>,
}

tokio::task_local! {
    /// The trace of the request whose future is running.
    static CURRENT: Arc<Trace>;
}

/// Whether traces are being recorded and exported.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The environment variable that says where traces go, if any is set (and not empty).
fn endpoint_set() -> bool {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// A positive integer from the environment (the batch processor's `OTEL_BSP_*`), else `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// The export thread, for [`Tracing::finish`].
pub struct Tracing {
    queue: Arc<Queue>,
}

/// Starts exporting traces when the environment asks for it (`None` when it does not, when
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, or when a second app in a test
/// process finds it already started). A broken setting is an error, reported at start.
pub fn init() -> Result<Option<Tracing>, String> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if disabled || !endpoint_set() || enabled() {
        return Ok(None);
    }
    // The exporter reads the endpoint, headers and timeout (`OTEL_EXPORTER_OTLP_*`) itself.
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read by the resource's detectors;
    // the name falls back to `inferd` rather than `unknown_service`.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name("inferd");
    }
    exporter.set_resource(&resource.build());
    let settings = BatchSettings {
        queue: env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize,
        batch: env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize,
        delay: Duration::from_millis(env_number("OTEL_BSP_SCHEDULE_DELAY", 5000)),
    };
    let queue = Queue::start(exporter, settings).map_err(|e| format!("cannot start the trace exporter's thread: {e}"))?;
    // The SDK's default configuration reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
    // (parent-based and always on when unset) and the span limits.
    let config = Config::default();
    let tracer = Tracer {
        sampler: config.sampler,
        ids: config.id_generator,
        max_attributes: config.span_limits.max_attributes_per_span as usize,
        scope: InstrumentationScope::builder("inferd").build(),
        queue: queue.clone(),
    };
    if TRACER.set(tracer).is_err() {
        return Ok(None);
    }
    Ok(Some(Tracing { queue }))
}

impl Tracing {
    /// Exports what is queued, waiting at most `within`; returns whether it all went.
    pub fn finish(self, within: Duration) -> bool {
        self.queue.shut_down(within).is_ok()
    }
}

/// A request's headers as the W3C propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A trace id as the logs write it: 32 lowercase hex digits, held inline (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct HexTraceId([u8; 32]);

impl HexTraceId {
    fn new(id: TraceId) -> Self {
        let mut digits = [0; 32];
        hex::encode_to_slice(id.to_bytes(), &mut digits).expect("16 bytes are 32 hex digits");
        Self(digits)
    }
}

impl std::ops::Deref for HexTraceId {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// A request's trace, shared by its server span, its children and its logs.
struct Trace {
    /// The server span's: the trace id, the server span's id, the flags and `tracestate`.
    context: SpanContext,
    id: HexTraceId,
}

impl Trace {
    fn sampled(&self) -> bool {
        self.context.is_sampled()
    }

    /// A finished child of the server span.
    fn child(&self, tracer: &Tracer, name: &'static str, (start, end): (SystemTime, SystemTime)) -> SpanData {
        let context = SpanContext::new(
            self.context.trace_id(),
            tracer.ids.new_span_id(),
            self.context.trace_flags(),
            false,
            self.context.trace_state().clone(),
        );
        SpanData {
            span_context: context,
            parent_span_id: self.context.span_id(),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: end,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: tracer.scope.clone(),
        }
    }
}

/// The server span of one HTTP request; its handlers run in its trace (see [`ServerSpan::run`]).
/// Only made when tracing is [`enabled`].
pub struct ServerSpan {
    trace: Arc<Trace>,
    /// What the span's record needs at the end; `None` when the trace is not sampled.
    open: Option<Box<OpenServer>>,
}

struct OpenServer {
    parent: SpanId,
    parent_is_remote: bool,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

impl ServerSpan {
    /// Starts the span for a request, a child of the caller's `traceparent` (and `tracestate`)
    /// when the headers carry a valid one.
    pub fn start(method: &'static str, path: &str, headers: &HeaderMap) -> Option<Self> {
        let tracer = TRACER.get()?;
        let start = opentelemetry::time::now();
        let parent = match headers.contains_key("traceparent") {
            true => TraceContextPropagator::new().extract(&Headers(headers)),
            false => Context::new(),
        };
        let parent_span = parent.span();
        let caller = parent_span.span_context();
        let trace_id = match caller.is_valid() {
            true => caller.trace_id(),
            false => tracer.ids.new_trace_id(),
        };
        let mut attributes = Vec::with_capacity(7);
        attributes.push(KeyValue::new("http.request.method", method));
        attributes.push(KeyValue::new("url.path", path.to_owned()));
        let sampling = tracer.sampler.should_sample(Some(&parent), trace_id, method, &SpanKind::Server, &attributes, &[]);
        let sampled = sampling.decision == SamplingDecision::RecordAndSample;
        let flags = caller.trace_flags().with_sampled(sampled);
        let context = SpanContext::new(trace_id, tracer.ids.new_span_id(), flags, false, sampling.trace_state);
        let id = HexTraceId::new(trace_id);
        let open = sampled.then(|| {
            attributes.extend(sampling.attributes);
            let (parent, parent_is_remote) = (caller.span_id(), caller.is_valid() && caller.is_remote());
            Box::new(OpenServer { parent, parent_is_remote, start, attributes })
        });
        Some(Self { trace: Arc::new(Trace { context, id }), open })
    }

    /// Runs `future` (the request's handling) in this span's trace, so that [`Child`] spans and
    /// [`current_trace_id`] find it.
    pub fn run<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self.trace.clone(), future)
    }

    /// The trace id as 32 hex digits (whether or not the trace is sampled), for the logs.
    pub fn trace_id(&self) -> HexTraceId {
        self.trace.id
    }

    /// Names the span after its route, records the answer and ends it.
    pub fn end(self, answer: Answer<'_>) {
        let (Some(tracer), Some(open)) = (TRACER.get(), self.open) else { return };
        let OpenServer { parent, parent_is_remote, start, mut attributes } = *open;
        attributes.push(KeyValue::new("http.route", answer.route.to_owned()));
        attributes.push(KeyValue::new("http.response.status_code", i64::from(answer.status)));
        if let Some(model) = answer.model {
            attributes.push(KeyValue::new("inferd.model", model.to_owned()));
        }
        if let Some(version) = answer.version {
            attributes.push(KeyValue::new("inferd.version", version.to_owned()));
        }
        if let Some(rows) = answer.rows {
            attributes.push(KeyValue::new("inferd.rows", rows as i64));
        }
        let dropped = attributes.len().saturating_sub(tracer.max_attributes);
        attributes.truncate(tracer.max_attributes);
        // Server spans are errors for 5xx only: a 4xx is the client's (OpenTelemetry's HTTP
        // conventions).
        let status = match answer.status >= 500 {
            true => Status::error(""),
            false => Status::Unset,
        };
        tracer.queue.push(SpanData {
            span_context: self.trace.context.clone(),
            parent_span_id: parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{} {}", answer.method, answer.route)),
            start_time: start,
            end_time: opentelemetry::time::now(),
            attributes,
            dropped_attributes_count: dropped as u32,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracer.scope.clone(),
        });
    }
}

/// What a request was answered, for its server span.
pub struct Answer<'a> {
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub rows: Option<usize>,
}

/// A child span of the current request's, ended when dropped; nothing when tracing is off, no
/// request trace is current or it is not sampled.
pub struct Child(Option<Box<OpenChild>>);

/// Boxed: a child lives across awaits, and an unboxed one would grow the request's future by
/// its size whether traces are on or off.
struct OpenChild {
    tracer: &'static Tracer,
    trace: Arc<Trace>,
    name: &'static str,
    start: SystemTime,
    status: Status,
}

impl Child {
    pub fn start(name: &'static str) -> Self {
        Self(current().map(|(tracer, trace)| {
            let start = opentelemetry::time::now();
            Box::new(OpenChild { tracer, trace, name, start, status: Status::Unset })
        }))
    }

    /// A span for something already measured (the batcher's queue wait and inference).
    pub fn between(name: &'static str, start: SystemTime, end: SystemTime) {
        if let Some((tracer, trace)) = current() {
            tracer.queue.push(trace.child(tracer, name, (start, end)));
        }
    }

    /// Marks the span as failed, with `message`.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        if let Some(open) = &mut self.0 {
            open.status = Status::error(message());
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            let OpenChild { tracer, trace, name, start, status } = *open;
            let mut span = trace.child(tracer, name, (start, opentelemetry::time::now()));
            span.status = status;
            tracer.queue.push(span);
        }
    }
}

/// The tracer and the current request's trace, when tracing is on and that trace is sampled.
fn current() -> Option<(&'static Tracer, Arc<Trace>)> {
    let tracer = TRACER.get()?;
    let trace = CURRENT.try_with(|trace| trace.sampled().then(|| trace.clone())).ok()??;
    Some((tracer, trace))
}

/// The current request's trace id, when tracing is on and a request trace is current.
pub fn current_trace_id() -> Option<HexTraceId> {
    TRACER.get()?;
    CURRENT.try_with(|trace| trace.id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_logged_as_32_lowercase_hex_digits() {
        let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(&*HexTraceId::new(id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&*HexTraceId::new(TraceId::from(1)), "00000000000000000000000000000001");
        assert_eq!(&*HexTraceId::new(id), id.to_string(), "as the API writes it");
    }
}
