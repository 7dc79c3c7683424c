//! Fuzzing as part of the suite: tens of thousands of generated and mutated bodies, sent to the
//! in-process router with `oneshot`, and every answer held to what the API documents.
//!
//! The generator is seeded, so a failure replays: `INFERD_FUZZ_SEED=<seed>` reruns a whole run,
//! `INFERD_FUZZ_CASE=<i>` only case `i` of it, and `INFERD_FUZZ_CASES=<n>` runs longer. A
//! hand-rolled generator rather than proptest: a run has to stay under a minute in a debug
//! build, and the shrinking it would bring is replaced by a greedy one that only runs on failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use inferd::http::{router, AppState};
use inferd::observe::Metrics;
use inferd::registry::Registry;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::helpers::{house_tensors, repo, test_config};

const DEFAULT_CASES: usize = 20_000;
/// Requests in flight at once; more than the two test threads, so that batches form.
const CONCURRENCY: usize = 16;
/// Failures reported in full (each one shrunk); the rest are only counted.
const REPORTED: usize = 4;
/// Bytes of a body or an answer quoted in a failure report.
const QUOTED: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_body_gets_a_documented_answer() {
    let seed = env_number("INFERD_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    let cases = env_number("INFERD_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let only = env_number("INFERD_FUZZ_CASE").map(|i| i as usize);
    let fuzz = Arc::new(Fuzzer::start().await);

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(only.unwrap_or(0)));
    let end = only.map_or(cases, |i| i + 1);
    let failures = Arc::new(Mutex::new(Vec::<(usize, Case, Failure)>::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (fuzz, next, failures, failed) = (fuzz.clone(), next.clone(), failures.clone(), failed.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let case = Case::generate(&mut fastrand::Rng::with_seed(case_seed(seed, i)));
                    if let Err(failure) = fuzz.check(&case).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut failures = failures.lock().unwrap();
                        // One report per kind of failure and route: the rest are duplicates.
                        if failures.len() < REPORTED
                            && !failures.iter().any(|(_, c, f)| f.kind == failure.kind && c.route == case.route)
                        {
                            failures.push((i, case, failure));
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a fuzz worker panicked");
    }
    let ran = end - only.unwrap_or(0);
    eprintln!("fuzz: {ran} cases in {:.1?} (seed {seed})", started.elapsed());

    // The server survived: it still answers health and a valid prediction.
    let (status, _, _) = fuzz.send("GET", "/health", Some("application/json"), Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "/health after the run");
    let valid = json!({"instances": [example("house_price", 0)]}).to_string().into_bytes();
    let (status, _, body) = fuzz.send("POST", "/predict", Some("application/json"), valid).await;
    assert_eq!(status, StatusCode::OK, "a valid /predict after the run: {}", quote(&body));

    let failures = std::mem::take(&mut *failures.lock().unwrap());
    if !failures.is_empty() {
        let mut report = format!(
            "{} of {ran} cases got an undocumented answer; replay with INFERD_FUZZ_SEED={seed}\n",
            failed.load(Ordering::Relaxed)
        );
        for (i, case, failure) in failures {
            let small = fuzz.shrink(case, &failure).await;
            let failure = fuzz.check(&small).await.expect_err("the shrunk case still fails");
            report.push_str(&format!(
                "\n[{}] {} (INFERD_FUZZ_CASE={i})\n  route: POST {}{}\n  body: {}\n  answer: {}\n",
                failure.kind,
                failure.detail,
                small.route.path(),
                small.content_type.map_or(" (no content type)".to_owned(), |t| format!(" ({t})")),
                quote(&small.body),
                quote(&fuzz.send_case(&small).await.2),
            ));
        }
        panic!("{report}");
    }
}

/// Every hostile shape, on an otherwise valid tensor request, on both models: the shapes that
/// crashed decoders before are checked on every run, not only when the generator draws them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shapes_get_a_documented_answer() {
    let fuzz = Fuzzer::start().await;
    let mut failures = Vec::new();
    for route in [Route::V2House, Route::V2Linear] {
        for shape in SHAPES {
            let mut tree = Json::from_value(&valid_tensors(route.model(), 1));
            let Some(Json::Arr(inputs)) = tree.get_mut("inputs") else { unreachable!("built with inputs") };
            *inputs[0].get_mut("shape").expect("inputs have shapes") = Json::Raw(shape.to_string());
            let case = Case { route, content_type: Some("application/json"), body: tree.text(), tree: Some(tree) };
            if let Err(failure) = fuzz.check(&case).await {
                failures.push(format!("{} {}: [{}] {}", route.path(), quote(&case.body), failure.kind, failure.detail));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

pub(crate) fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")))
}

/// Case `i`'s own seed, so that one case replays without generating the ones before it.
pub(crate) fn case_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A body or an answer for a report: a unit of up to four characters repeated many times is
/// written `<unit×n>`, and the whole is cut short.
fn quote(bytes: &[u8]) -> String {
    let chars: Vec<char> = String::from_utf8_lossy(bytes).chars().collect();
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < chars.len() {
        for unit in 1..=4 {
            let pattern = &chars[i..(i + unit).min(chars.len())];
            let mut reps = 1;
            while chars.get(i + reps * unit..i + (reps + 1) * unit) == Some(pattern) {
                reps += 1;
            }
            if reps * unit > 16 {
                out.push_str(&format!("<{}×{reps}>", pattern.iter().collect::<String>()));
                i += reps * unit;
                continue 'outer;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    if out.chars().count() <= QUOTED {
        return out;
    }
    let head: String = out.chars().take(QUOTED).collect();
    format!("{head}... ({} bytes in all)", bytes.len())
}

// ---------------------------------------------------------------------------------------------
// The app under test and the oracle.

struct Fuzzer {
    app: Router,
}

#[derive(Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
}

fn fail(kind: &'static str, detail: impl Into<String>) -> Result<(), Failure> {
    Err(Failure { kind, detail: detail.into() })
}

impl Fuzzer {
    /// The app with the committed models and metrics on, without the prediction log (it would
    /// only write files) and without a listener: requests go straight into the router.
    async fn start() -> Self {
        let mut config = test_config();
        config.prediction_log.enabled = false;
        config.metrics.enabled = true;
        let config = Arc::new(config);
        let metrics = Metrics::new(&config.metrics).expect("metrics settings are valid");
        let state = AppState::new(config.clone(), metrics.clone(), None);
        let registry = tokio::task::spawn_blocking(move || Registry::load(&config, &metrics))
            .await
            .unwrap()
            .expect("the committed models load");
        let openapi = inferd::openapi::document(&state.config, &inferd::openapi::documented(&registry));
        state.set_registry(registry, openapi);
        Self { app: router(state) }
    }

    async fn send(&self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = self.app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the body is read");
        (parts.status, parts.headers, bytes.to_vec())
    }

    async fn send_case(&self, case: &Case) -> Answer {
        self.send("POST", case.route.path(), case.content_type, case.body.clone()).await
    }

    async fn check(&self, case: &Case) -> Result<(), Failure> {
        let answer = self.send_case(case).await;
        check_answer(case, &answer)
    }

    /// Greedily removes parts of a failing body while it still fails the same way.
    async fn shrink(&self, mut case: Case, failure: &Failure) -> Case {
        let mut budget = 400;
        loop {
            let mut progress = false;
            let mut candidates = case.smaller();
            // The biggest cut that still fails wins each round.
            candidates.sort_by_key(|c| c.body.len());
            for candidate in candidates {
                if budget == 0 {
                    return case;
                }
                budget -= 1;
                if self.check(&candidate).await.is_err_and(|f| f.kind == failure.kind) {
                    case = candidate;
                    progress = true;
                    break;
                }
            }
            if !progress {
                return case;
            }
        }
    }
}

type Answer = (StatusCode, axum::http::HeaderMap, Vec<u8>);

/// Error types by status, as `ApiError::status` maps them and docs/api.md documents them.
const ERROR_TYPES: &[(u16, &[&str])] = &[
    (400, &["malformed_json", "invalid_path", "unreadable_body"]),
    (404, &["model_not_found", "version_not_found", "not_found"]),
    (413, &["payload_too_large"]),
    (415, &["unsupported_media_type"]),
    (422, &["invalid_request", "validation_error", "model_rejected_input"]),
    (503, &["not_ready", "overloaded", "shutting_down"]),
];

/// What an error body may weigh: messages quote at most about 100 characters of a value, so
/// a rejection stays small, except that every invalid field of every instance is listed.
fn error_size_limit(field_errors: usize) -> usize {
    4096 + 512 * field_errors
}

fn check_answer(case: &Case, (status, headers, body): &Answer) -> Result<(), Failure> {
    let v2 = case.route.is_v2();
    let documented: &[u16] = if v2 { &[200, 400, 404, 413, 503] } else { &[200, 400, 404, 413, 415, 422, 503] };
    if *status == StatusCode::INTERNAL_SERVER_ERROR {
        return fail("500", quote(body));
    }
    if !documented.contains(&status.as_u16()) {
        return fail("undocumented status", format!("{status}: {}", quote(body)));
    }
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return fail("not JSON", format!("{status} with content type {:?}", headers.get(header::CONTENT_TYPE)));
    }
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return fail("not JSON", format!("{status}: {}", quote(body)));
    };
    let sent = serde_json::from_slice::<Value>(&case.body).ok();
    match (status.as_u16(), v2) {
        (200, false) => check_predictions(case, sent.as_ref(), &answer, headers),
        (200, true) => check_outputs(case, sent.as_ref(), &answer),
        (code, false) => check_api_error(code, &answer, headers, body.len()),
        (_, true) => check_v2_error(&answer, body.len()),
    }
}

fn check_api_error(code: u16, answer: &Value, headers: &axum::http::HeaderMap, size: usize) -> Result<(), Failure> {
    let Some(object) = answer.as_object() else { return fail("error shape", answer.to_string()) };
    if let Some(extra) = object.keys().find(|k| !["error", "error_type", "details", "request_id"].contains(&k.as_str()))
    {
        return fail("error shape", format!("unexpected key {extra:?}"));
    }
    if answer["error"].as_str().is_none_or(str::is_empty) {
        return fail("error shape", "`error` is not a non-empty string");
    }
    let allowed = ERROR_TYPES.iter().find(|(c, _)| *c == code).map_or(&[][..], |(_, types)| types);
    if !answer["error_type"].as_str().is_some_and(|t| allowed.contains(&t)) {
        return fail("error type", format!("{code} with error_type {}", answer["error_type"]));
    }
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    if answer["request_id"].as_str() != request_id {
        return fail("error shape", format!("request_id {} but header {request_id:?}", answer["request_id"]));
    }
    let details = match object.get("details") {
        None => 0,
        Some(Value::Array(details)) => {
            if let Some(bad) = details.iter().find(|d| {
                !(d["path"].is_string() && d["message"].is_string() && d.as_object().is_some_and(|o| o.len() == 2))
            }) {
                return fail("error shape", format!("detail {bad}"));
            }
            details.len()
        }
        Some(other) => return fail("error shape", format!("details is {other}")),
    };
    if size > error_size_limit(details) {
        return fail("error body too large", format!("{size} bytes for {details} field error(s)"));
    }
    Ok(())
}

fn check_v2_error(answer: &Value, size: usize) -> Result<(), Failure> {
    let Some(object) = answer.as_object() else { return fail("error shape", answer.to_string()) };
    let error = object.get("error").and_then(Value::as_str).unwrap_or_default();
    if object.len() != 1 || error.is_empty() {
        return fail("error shape", format!("v2 errors are {{\"error\": \"...\"}}, got keys {:?}", object.keys()));
    }
    // Field errors are joined into the one message, "; " between them.
    let field_errors = if error.contains("invalid field(s)") { error.matches("; ").count() + 1 } else { 0 };
    if size > error_size_limit(field_errors) {
        return fail("error body too large", format!("{size} bytes for {field_errors} field error(s)"));
    }
    Ok(())
}

/// A 200 on the `/predict` family: one prediction per instance, for the model the route names.
fn check_predictions(
    case: &Case,
    sent: Option<&Value>,
    answer: &Value,
    headers: &axum::http::HeaderMap,
) -> Result<(), Failure> {
    let instances = sent.and_then(|s| s["instances"].as_array()).map_or(0, Vec::len);
    let fields: Vec<String> = schema_fields(case.route.model());
    if let Some(bad) = sent.and_then(|s| s["instances"].as_array()).and_then(|all| {
        all.iter().find(|i| {
            i.as_object().is_none_or(|o| o.len() != fields.len() || fields.iter().any(|f| !o.contains_key(f)))
        })
    }) {
        return fail("accepted an invalid instance", format!("instance {bad}"));
    }
    let predictions = answer["predictions"].as_array().map_or(usize::MAX, Vec::len);
    if predictions != instances {
        return fail("wrong prediction count", format!("{predictions} predictions for {instances} instances"));
    }
    if answer["model"] != case.route.model() || answer["version"] != "1" {
        return fail("wrong model", format!("model {} version {}", answer["model"], answer["version"]));
    }
    if answer["id"].as_str() != headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        return fail("wrong id", format!("id {}", answer["id"]));
    }
    let numeric = |v: &Value| v.is_number() || v.is_null();
    let well_formed = answer["predictions"].as_array().into_iter().flatten().all(|p| {
        p.as_object().is_some_and(|o| {
            !o.is_empty() && o.values().all(|v| numeric(v) || v.as_array().is_some_and(|a| a.iter().all(numeric)))
        })
    });
    if !well_formed {
        return fail("wrong prediction shape", quote(answer.to_string().as_bytes()));
    }
    Ok(())
}

/// A 200 on `/v2/.../infer`: every output holds one row per input row, and its data fills its shape.
fn check_outputs(case: &Case, sent: Option<&Value>, answer: &Value) -> Result<(), Failure> {
    let inputs = sent.and_then(|s| s["inputs"].as_array()).cloned().unwrap_or_default();
    // The model's inputs as sent (the first of a name is the one used), and their row counts.
    let rows: Vec<i64> = inputs.iter().filter_map(|i| i["shape"][0].as_i64()).collect();
    let Some(&n) = rows.first() else { return fail("wrong output shape", "200 without inputs") };
    if rows.iter().any(|r| *r != n) {
        return fail("inconsistent inputs accepted", format!("row counts {rows:?}"));
    }
    if answer["model_name"] != case.route.model() || answer["model_version"] != "1" {
        return fail("wrong model", format!("model {} version {}", answer["model_name"], answer["model_version"]));
    }
    let sent_id = sent.map_or(&Value::Null, |s| &s["id"]);
    if answer.get("id").unwrap_or(&Value::Null) != sent_id {
        return fail("wrong id", format!("sent {sent_id}, answered {}", answer["id"]));
    }
    let Some(outputs) = answer["outputs"].as_array().filter(|o| !o.is_empty()) else {
        return fail("wrong output shape", "no outputs");
    };
    for output in outputs {
        let shape: Vec<i64> = output["shape"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
        let data = output["data"].as_array().map_or(0, Vec::len) as i64;
        if shape.first() != Some(&n) || shape.iter().product::<i64>() != data {
            return fail("wrong output shape", format!("{n} rows in, output shape {shape:?} with {data} values"));
        }
    }
    Ok(())
}

/// The committed schema documents, read once.
fn schema_document(model: &str) -> &'static Value {
    static SCHEMAS: OnceLock<Vec<(&str, Value)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        ["house_price", "house_price_linear"]
            .into_iter()
            .map(|name| {
                let text = std::fs::read_to_string(repo().join("schemas").join(format!("{name}.json"))).unwrap();
                (name, serde_json::from_str(&text).unwrap())
            })
            .collect()
    });
    &schemas.iter().find(|(name, _)| *name == model).expect("a committed model").1
}

fn schema_fields(model: &str) -> Vec<String> {
    schema_document(model)["properties"].as_object().unwrap().keys().cloned().collect()
}

fn example(model: &str, i: usize) -> Value {
    let examples = schema_document(model)["examples"].as_array().unwrap();
    examples[i % examples.len()].clone()
}

// ---------------------------------------------------------------------------------------------
// Bodies: a JSON tree that can also hold what `serde_json::Value` cannot (duplicate keys,
// number literals out of range), built from valid bodies and mutated.

#[derive(Clone, Debug)]
enum Json {
    /// Written as is: numbers, `true`, `null`, and literals such as `18446744073709551616`.
    Raw(String),
    Str(String),
    Arr(Vec<Json>),
    /// Keys may repeat.
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn from_value(value: &Value) -> Self {
        match value {
            Value::String(s) => Self::Str(s.clone()),
            Value::Array(items) => Self::Arr(items.iter().map(Self::from_value).collect()),
            Value::Object(map) => Self::Obj(map.iter().map(|(k, v)| (k.clone(), Self::from_value(v))).collect()),
            other => Self::Raw(other.to_string()),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Raw(raw) => out.push_str(raw),
            Self::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Self::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Obj(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> Vec<u8> {
        let mut out = String::new();
        self.write(&mut out);
        out.into_bytes()
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Self::Obj(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every node, depth first, by a path of child indices.
    fn paths(&self, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        out.push(prefix.clone());
        let children: Vec<&Json> = match self {
            Self::Arr(items) => items.iter().collect(),
            Self::Obj(members) => members.iter().map(|(_, v)| v).collect(),
            _ => return,
        };
        // Long arrays (1000 rows) would make shrinking crawl: look at the first few children.
        for (i, child) in children.into_iter().enumerate().take(12) {
            prefix.push(i);
            child.paths(prefix, out);
            prefix.pop();
        }
    }

    fn at_mut(&mut self, path: &[usize]) -> &mut Json {
        match path.split_first() {
            None => self,
            Some((&i, rest)) => match self {
                Self::Arr(items) => items[i].at_mut(rest),
                Self::Obj(members) => members[i].1.at_mut(rest),
                _ => unreachable!("paths only lead through containers"),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Predict,
    ModelPredict,
    VersionPredict,
    V2House,
    V2Linear,
}

impl Route {
    const ALL: [Route; 5] = [Self::Predict, Self::ModelPredict, Self::VersionPredict, Self::V2House, Self::V2Linear];

    fn path(self) -> &'static str {
        match self {
            Self::Predict => "/predict",
            Self::ModelPredict => "/models/house_price/predict",
            Self::VersionPredict => "/models/house_price_linear/versions/1/predict",
            Self::V2House => "/v2/models/house_price/infer",
            Self::V2Linear => "/v2/models/house_price_linear/infer",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Self::Predict | Self::ModelPredict | Self::V2House => "house_price",
            Self::VersionPredict | Self::V2Linear => "house_price_linear",
        }
    }

    fn is_v2(self) -> bool {
        matches!(self, Self::V2House | Self::V2Linear)
    }
}

#[derive(Clone, Debug)]
struct Case {
    route: Route,
    content_type: Option<&'static str>,
    /// The tree the body was written from; `None` once its text was mutated byte by byte.
    tree: Option<Json>,
    body: Vec<u8>,
}

/// Number literals at and past the edges: f64, i64, u64 and FP16 limits, and what JSON cannot hold.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "3.0",
    "3.5",
    "1e308",
    "-1e308",
    "1e999",
    "-1e999",
    "1e-320",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "65504",
    "65505",
    "-65505",
    "100000.0001",
    "99.999",
    "1000000000000",
    "3689348814741910324",
    "4611686018427387904",
    "0.1e1",
    "1E2",
];

/// Shapes that have crashed or could crash a decoder: huge, negative, empty, overflowing.
const SHAPES: &[&str] = &[
    "[1000000000000,5]",
    "[1000000000000,1]",
    "[3689348814741910324,5]",
    "[3689348814741910324,1]",
    "[9223372036854775807,1]",
    "[4611686018427387904,4]",
    "[2,4611686018427387904,4]",
    "[1,3,6148914691236517207]",
    "[1,7,7905747460161236407]",
    "[1,-1,-5]",
    "[-1,5]",
    "[-1,1]",
    "[]",
    "[1,1,5]",
    "[1,5,1]",
    "[1]",
    "[5]",
    "[0,5]",
    "[0,1]",
    "[0]",
    "[1,0]",
    "[1,5]",
    "[2,5]",
    "[1,1]",
    "[2,1]",
    "[1.5,1]",
    "[\"1\",1]",
    "[null]",
    "5",
    "null",
    "[18446744073709551616,1]",
];

const DATATYPES: &[&str] = &["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT64", "BOOL", "BYTES", "fp32", ""];

fn pick<'a, T>(rng: &mut fastrand::Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn long_string(rng: &mut fastrand::Rng) -> String {
    let len = match rng.u8(..40) {
        0 => 100_000,
        1..=8 => rng.usize(1000..20_000),
        _ => rng.usize(100..1000),
    };
    let unit = pick(rng, &["a", "yes", "é", "\u{1F600}", "\\", "\"", "\u{0}"]);
    unit.repeat(len / unit.len().max(1))
}

/// A value of any type, possibly deep, ragged or huge.
fn any_value(rng: &mut fastrand::Rng, depth: usize) -> Json {
    match rng.u8(..14) {
        0 => Json::Raw("null".into()),
        1 => Json::Raw(pick(rng, &["true", "false"]).to_string()),
        2..=4 => Json::Raw(pick(rng, NUMBERS).to_string()),
        5 => Json::Str(pick(rng, &["", "yes", "no", "5000", "NaN", "Infinity", "features", "price"]).to_string()),
        6 => Json::Str(long_string(rng)),
        7 => {
            // Deep nesting, below and past serde_json's recursion limit of 128.
            let depth = rng.usize(2..300);
            let mut value = Json::Raw("1".into());
            for _ in 0..depth {
                value = Json::Arr(vec![value]);
            }
            value
        }
        8 | 9 if depth < 3 => {
            // Ragged: rows of different lengths and types.
            Json::Arr((0..rng.usize(0..5)).map(|_| any_value(rng, depth + 1)).collect())
        }
        10 if depth < 3 => {
            Json::Obj((0..rng.usize(0..4)).map(|_| (field_name(rng), any_value(rng, depth + 1))).collect())
        }
        _ => Json::Raw(rng.i32(-100..100_000).to_string()),
    }
}

fn field_name(rng: &mut fastrand::Rng) -> String {
    pick(rng, &["lotsize", "bedrooms", "stories", "airco", "features", "colour", "", "instances", "inputs", "name"])
        .to_string()
}

impl Case {
    fn generate(rng: &mut fastrand::Rng) -> Self {
        let route = *pick(rng, &Route::ALL);
        let tree = match rng.u8(..20) {
            0 => any_value(rng, 0),
            _ if route.is_v2() => tensors_body(rng, route.model()),
            _ => instances_body(rng, route.model()),
        };
        let content_type = match rng.u8(..30) {
            0 => None,
            1 => Some("text/plain"),
            2 => Some("application/json; charset=utf-8"),
            3 => Some("application/vnd.api+json"),
            _ => Some("application/json"),
        };
        let mut body = tree.text();
        if rng.u8(..200) == 0 {
            // Past the 1 MiB body limit.
            body.extend(std::iter::repeat_n(b' ', 1 << 20));
        }
        if rng.u8(..4) == 0 {
            mutate_bytes(rng, &mut body);
            return Self { route, content_type, tree: None, body };
        }
        Self { route, content_type, tree: Some(tree), body }
    }

    /// Smaller versions of this case, for shrinking: each removes or simplifies one part.
    fn smaller(&self) -> Vec<Case> {
        let with = |tree: Json| Case { body: tree.text(), tree: Some(tree), ..self.clone() };
        let Some(tree) = &self.tree else {
            // Bytes: cut halves, quarters... out of the text.
            let n = self.body.len();
            let mut out = Vec::new();
            let mut chunk = n / 2;
            while chunk > 0 && out.len() < 40 {
                for start in (0..n).step_by(chunk) {
                    let mut body = self.body.clone();
                    body.drain(start..(start + chunk).min(n));
                    out.push(Case { body, ..self.clone() });
                }
                chunk /= 2;
            }
            return out;
        };
        let mut paths = Vec::new();
        tree.paths(&mut Vec::new(), &mut paths);
        let mut out = Vec::new();
        for path in &paths {
            let mut node = tree.clone();
            match node.at_mut(path) {
                Json::Arr(items) if !items.is_empty() => {
                    let n = items.len();
                    let mut cuts: Vec<std::ops::Range<usize>> = (0..n.min(12)).map(|i| i..i + 1).collect();
                    if n > 2 {
                        cuts.extend([0..n / 2, n / 2..n]);
                    }
                    for cut in cuts {
                        let mut smaller = tree.clone();
                        if let Json::Arr(items) = smaller.at_mut(path) {
                            items.drain(cut);
                        }
                        out.push(with(smaller));
                    }
                }
                Json::Obj(members) if !members.is_empty() => {
                    for i in 0..members.len() {
                        let mut smaller = tree.clone();
                        if let Json::Obj(members) = smaller.at_mut(path) {
                            members.remove(i);
                        }
                        out.push(with(smaller));
                    }
                }
                Json::Str(s) if s.len() > 8 => {
                    let n = s.chars().count();
                    for keep in [n / 2, n * 3 / 4, n * 7 / 8] {
                        let mut smaller = tree.clone();
                        *smaller.at_mut(path) = Json::Str(s.chars().take(keep).collect());
                        out.push(with(smaller));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// `{"instances": [...]}` from the schema's examples, with a few fields or the envelope broken.
fn instances_body(rng: &mut fastrand::Rng, model: &str) -> Json {
    let count = match rng.u16(..400) {
        0..=9 => 0,
        10 => 1024,
        11 => 1025,
        12..=39 => rng.usize(5..40),
        _ => rng.usize(1..5),
    };
    let mut instances: Vec<Json> = (0..count).map(|i| Json::from_value(&example(model, i))).collect();
    let fields = schema_fields(model);
    for _ in 0..rng.usize(0..4) {
        if instances.is_empty() {
            break;
        }
        let i = rng.usize(..instances.len());
        mutate_instance(rng, &mut instances[i], &fields);
    }
    let mut body = vec![("instances".to_owned(), Json::Arr(instances))];
    match rng.u8(..20) {
        0 => body[0].1 = any_value(rng, 0),
        1 => body.clear(),
        2 => body.push(("instances".into(), Json::Arr(vec![Json::from_value(&example(model, 0))]))),
        3 => body.push((field_name(rng), any_value(rng, 1))),
        4 => body[0].0 = field_name(rng),
        _ => {}
    }
    let body = Json::Obj(body);
    if rng.u8(..40) == 0 {
        Json::Arr(vec![body])
    } else {
        body
    }
}

fn mutate_instance(rng: &mut fastrand::Rng, instance: &mut Json, fields: &[String]) {
    let Json::Obj(members) = instance else { return };
    let field = pick(rng, fields).clone();
    match rng.u8(..10) {
        0 => members.retain(|(k, _)| *k != field),
        1 => members.push((field, any_value(rng, 1))),
        2 => members.push((field_name(rng), any_value(rng, 1))),
        3 => *instance = any_value(rng, 1),
        _ => {
            if let Some((_, value)) = members.iter_mut().find(|(k, _)| *k == field) {
                *value = any_value(rng, 1);
            }
        }
    }
}

/// Open Inference Protocol tensors for some of the schema's examples, some of them broken.
fn tensors_body(rng: &mut fastrand::Rng, model: &str) -> Json {
    let n = match rng.u16(..400) {
        0..=9 => 0,
        10 => 1025,
        _ => rng.usize(1..5),
    };
    let mut body = Json::from_value(&valid_tensors(model, n));
    for _ in 0..rng.usize(0..4) {
        mutate_tensors(rng, &mut body);
    }
    body
}

/// The schema's examples as tensors: one per feature for `house_price`, one `[N, 5]` matrix
/// for `house_price_linear`.
fn valid_tensors(model: &str, n: usize) -> Value {
    let rows: Vec<Value> = (0..n).map(|i| example(model, i)).collect();
    if model == "house_price" {
        return house_tensors(&rows);
    }
    let fields = schema_fields(model);
    let data: Vec<Value> = rows.iter().map(|r| Value::Array(fields.iter().map(|f| r[f].clone()).collect())).collect();
    json!({"inputs": [{"name": "features", "shape": [n, 5], "datatype": "FP32", "data": data}]})
}

fn mutate_tensors(rng: &mut fastrand::Rng, body: &mut Json) {
    let op = rng.u8(..24);
    if op >= 20 {
        match op {
            20 => {
                if let Some(inputs) = body.get_mut("inputs") {
                    *inputs = any_value(rng, 0);
                }
            }
            21 => {
                let outputs = match rng.u8(..3) {
                    0 => json!([{"name": "price"}]),
                    1 => json!([{"name": "nope"}, {"name": "price", "parameters": {"binary_data": true}}]),
                    _ => json!([]),
                };
                if let Json::Obj(members) = body {
                    members.push(("outputs".into(), Json::from_value(&outputs)));
                }
            }
            22 => {
                if let Json::Obj(members) = body {
                    members.push(("id".into(), any_value(rng, 1)));
                }
            }
            _ => {
                if let Json::Obj(members) = body {
                    members.push(("parameters".into(), any_value(rng, 1)));
                }
            }
        }
        return;
    }
    let Some(Json::Arr(inputs)) = body.get_mut("inputs") else { return };
    if inputs.is_empty() {
        return;
    }
    let i = rng.usize(..inputs.len());
    match op {
        0..=4 => {
            if let Some(shape) = inputs[i].get_mut("shape") {
                *shape = Json::Raw(pick(rng, SHAPES).to_string());
            }
        }
        5 | 6 => {
            if let Some(datatype) = inputs[i].get_mut("datatype") {
                *datatype = Json::Str(pick(rng, DATATYPES).to_string());
            }
        }
        7 => {
            if let Some(name) = inputs[i].get_mut("name") {
                *name = Json::Str(field_name(rng));
            }
        }
        8 => {
            inputs.remove(i);
        }
        9 | 10 => {
            // A duplicate input, sometimes with another shape.
            let mut copy = inputs[i].clone();
            if rng.bool() {
                if let Some(shape) = copy.get_mut("shape") {
                    *shape = Json::Raw(pick(rng, SHAPES).to_string());
                }
            }
            inputs.push(copy);
        }
        11 => {
            if let Json::Obj(members) = &mut inputs[i] {
                if !members.is_empty() {
                    members.remove(rng.usize(..members.len()));
                }
            }
        }
        12..=14 => {
            if let Some(data) = inputs[i].get_mut("data") {
                *data = any_value(rng, 0);
            }
        }
        _ => {
            // One element of the data replaced, wherever it sits in nested rows.
            if let Some(data) = inputs[i].get_mut("data") {
                let mut paths = Vec::new();
                data.paths(&mut Vec::new(), &mut paths);
                let path = pick(rng, &paths).clone();
                *data.at_mut(&path) = any_value(rng, 1);
            }
        }
    }
}

/// Byte-level damage to the JSON text: truncation, flipped bits, inserted and repeated bytes.
fn mutate_bytes(rng: &mut fastrand::Rng, body: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..4) {
        let n = body.len();
        let at = rng.usize(..=n);
        match rng.u8(..7) {
            0 => body.truncate(at),
            1 if n > 0 => body[at.min(n - 1)] ^= 1 << rng.u8(..8),
            2 => {
                let token = pick(rng, &["{", "}", "[", "]", ",", ":", "\"", "\\u", "1e999", "NaN", "-", "\u{0}"]);
                body.splice(at..at, token.bytes());
            }
            3 => {
                body.splice(at..at, [0xFF, 0xC0, 0x80].into_iter().take(rng.usize(1..4)));
            }
            4 => {
                let end = (at + rng.usize(..64)).min(n);
                body.drain(at..end);
            }
            5 => {
                let end = (at + rng.usize(..64)).min(n);
                let copy = body[at..end].to_vec();
                body.splice(at..at, copy);
            }
            _ => body.insert(at, rng.u8(..)),
        }
    }
}
