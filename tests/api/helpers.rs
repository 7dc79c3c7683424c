use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inferd::config::{Config, ModelConfig};
use inferd::startup::{Application, Readiness};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Nearly every test starts the server, which needs the ONNX Runtime library: one failure that
/// says how to get it, beside theirs.
#[test]
fn the_onnx_runtime_library_is_fetched() {
    let fetched = std::fs::read_dir(repo().join(".ort"))
        .into_iter()
        .flatten()
        .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libonnxruntime.so")));
    assert!(fetched, "no ONNX Runtime library in .ort/: run scripts/fetch-onnxruntime.sh");
}

/// The committed `runtime.toml`, bound to an ephemeral loopback port.
pub fn test_config() -> Config {
    let text = std::fs::read_to_string(repo().join("runtime.toml")).expect("runtime.toml is committed");
    let mut config = Config::from_toml(&text, &repo()).expect("runtime.toml is valid");
    config.server.host = [127, 0, 0, 1].into();
    config.server.port = 0;
    config
}

/// The committed config plus one more `[[models]]` entry, without a schema file.
pub fn config_with_model(name: &str, file: &str, version: &str, default_version: bool) -> Config {
    let mut config = test_config();
    config.models.push(ModelConfig {
        name: name.into(),
        path: repo().join("models").join(file),
        schema: None,
        version: version.into(),
        default: false,
        default_version,
        probabilities_by_class: false,
        labels: None,
        golden: None,
        traffic: None,
        shadow: None,
        outputs: Default::default(),
        rename_v2: false,
    });
    config.check().expect("valid config");
    config
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Where this app writes its prediction log; removed with the app.
    pub prediction_log_dir: PathBuf,
    _logs: Option<tempfile::TempDir>,
    pub metrics_base: Option<String>,
    pub state: inferd::http::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), inferd::startup::StartupError>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(test_config()).await
    }

    /// Starts the app and returns once it reports ready (models loaded and warmed up).
    /// Unless the test chose a prediction log folder, the app gets a fresh temporary one.
    pub async fn spawn_with(mut config: Config) -> Self {
        let mut logs = None;
        if config.prediction_log.directory == repo().join("logs") {
            let dir = tempfile::tempdir().expect("temporary folder");
            config.prediction_log.directory = dir.path().to_owned();
            logs = Some(dir);
        }
        let prediction_log_dir = config.prediction_log.directory.clone();
        // Display, not Debug: it says what to do (e.g. the command that fetches ONNX Runtime).
        let app = Application::build(config).await.unwrap_or_else(|e| panic!("the app does not build: {e}"));
        let base = format!("http://{}", app.local_addr());
        let metrics_base = app.metrics_addr().map(|addr| format!("http://{addr}"));
        let mut readiness = app.readiness();
        let state = app.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let readiness = readiness.wait_for(|r| *r != Readiness::Loading).await.expect("app reports readiness").clone();
        assert_eq!(readiness, Readiness::Ready, "app failed to start");
        Self {
            base,
            client: reqwest::Client::new(),
            prediction_log_dir,
            _logs: logs,
            metrics_base,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The loaded batcher of a model's default version.
    pub fn batcher(&self, model: &str) -> inferd::batch::Batcher {
        self.state.loaded().expect("loaded").get(model, None).expect("model served").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request sent")
    }

    pub async fn predict(&self, instances: &[Value]) -> reqwest::Response {
        self.post_json("/predict", &serde_json::json!({ "instances": instances })).await
    }

    /// `GET /metrics` from wherever this app serves it.
    pub async fn metrics(&self) -> String {
        let base = self.metrics_base.as_deref().unwrap_or(&self.base);
        let response = self.client.get(format!("{base}/metrics")).send().await.expect("request sent");
        assert_eq!(response.status(), 200, "/metrics");
        response.text().await.expect("text body")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.client.get(self.url(path)).send().await.expect("request sent").json().await.expect("JSON body")
    }

    /// Triggers a graceful shutdown and waits for it to finish. Returns the temporary
    /// prediction log folder, which is removed when dropped.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.take().expect("running").await.expect("app task").expect("clean shutdown");
        self._logs.take()
    }
}

/// Polls `check` every 20 ms until it returns true; fails naming `what` once `within` has
/// passed. Tests wait on what they can observe with this, never on a fixed sleep.
pub async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` to a child process (no `kill` command needed: it is not on every system).
pub fn send_signal(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill(2) touches no memory of ours; the child is not yet reaped, so its id is its own.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({}, {signal}): {}", child.id(), std::io::Error::last_os_error());
}

/// The reference rows and predictions written by `models/train_house_price.py`.
pub struct Reference {
    pub instances: Vec<Value>,
    pub expected: Vec<f64>,
    pub sklearn: Vec<f64>,
}

pub fn reference(file: &str, key: &str) -> Reference {
    let text = std::fs::read_to_string(repo().join("models").join(file)).expect("reference file is committed");
    let doc: Value = serde_json::from_str(&text).expect("reference is JSON");
    let floats = |k: &str| -> Vec<f64> {
        doc.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect())
            .unwrap_or_default()
    };
    Reference {
        instances: doc["instances"].as_array().unwrap().clone(),
        expected: floats(key),
        sklearn: floats("sklearn_price"),
    }
}

pub fn assert_close(got: f64, want: f64, rtol: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-12);
    assert!(err <= rtol, "{what}: got {got}, want {want} (relative error {err:.2e} > {rtol:.0e})");
}

/// Asserts the one error shape every rejection uses, and returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, error_type: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json", "error bodies are JSON");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error_type"], error_type, "{body}");
    assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "the body names the request, as the header does");
    body
}

/// The value of one series in a Prometheus text exposition: `name` with exactly `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let mut got: Vec<String> = series_labels.split(',').filter(|l| !l.is_empty()).map(str::to_owned).collect();
        got.sort();
        (series_name == name && got == want).then(|| value.parse().expect("numeric sample"))
    })
}

pub fn instance_with(base: &Value, field: &str, value: Value) -> Value {
    let mut out = base.clone();
    out[field] = value;
    out
}

pub fn schema_example(model: &str) -> Value {
    let path: &Path = &repo().join("schemas").join(format!("{model}.json"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["examples"][0].clone()
}

/// House-price rows as Open Inference Protocol tensors, one per feature.
pub fn house_tensors(rows: &[Value]) -> Value {
    let fields = ["lotsize", "bedrooms", "bathrms", "stories", "garagepl"];
    let yes_no = ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"];
    let n = rows.len();
    let mut inputs: Vec<Value> = Vec::new();
    for f in fields {
        let datatype = if f == "lotsize" { "FP32" } else { "INT64" };
        let data: Vec<Value> = rows.iter().map(|r| r[f].clone()).collect();
        inputs.push(json!({"name": f, "shape": [n, 1], "datatype": datatype, "data": data}));
    }
    for f in yes_no {
        // Nested row-major data is accepted as well as flat.
        let data: Vec<Value> = rows.iter().map(|r| json!([r[f].clone()])).collect();
        inputs.push(json!({"name": f, "shape": [n, 1], "datatype": "BYTES", "data": data}));
    }
    json!({"id": "req-7", "inputs": inputs})
}
