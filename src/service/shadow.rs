//! Shadow runs: a sample of a model's requests also runs on another version after it was
//! answered. The answer is never delayed or failed by it; differences beyond the tolerance are
//! counted (`inferd_shadow_diffs_total{model,version,output}`) and logged with both answers.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::model::golden::numeric_pairs;
use crate::model::views::row_outputs_json;
use crate::registry::Shadow;

use crate::observe::{Metrics, RateLimited};
use crate::tensor::rows::Rows;

/// How long a shadow run may wait and run: shadows yield to serving, so a busy shadow is
/// skipped rather than queued for long.
const SHADOW_DEADLINE: Duration = Duration::from_secs(10);

/// At most one "shadow differs" line per second; the next one counts those held back.
static DIFFERS_LOG: LazyLock<Mutex<RateLimited>> =
    LazyLock::new(|| Mutex::new(RateLimited::new(Duration::from_secs(1))));

pub async fn run(
    shadow: &Shadow,
    metrics: &Metrics,
    request_id: &str,
    rows: Rows,
    answered: Vec<Map<String, Value>>,
    primary: String,
) {
    let spec = shadow.batcher.spec().clone();
    let result = match shadow.batcher.admit(rows.len) {
        Ok(admission) => admission.infer(rows, Instant::now() + SHADOW_DEADLINE).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let inferred = match result {
        Ok(inferred) => inferred,
        Err(error) => {
            metrics.shadow_run(&spec.name, &spec.version, "skipped");
            tracing::debug!(model = %spec.name, version = %spec.version, %error, "shadow run skipped");
            return;
        }
    };
    let mut differed = false;
    for (instance, ((batch, row), answer)) in inferred.each_row().zip(&answered).enumerate() {
        let shadowed = row_outputs_json(&spec, batch, row);
        for (output, was) in answer {
            let now = shadowed.get(output).unwrap_or(&Value::Null);
            let within = was == now
                || numeric_pairs(was, now).is_some_and(|p| p.iter().all(|(e, g)| shadow.tolerance.accepts(*e, *g)));
            if within {
                continue;
            }
            differed = true;
            metrics.shadow_diff(&spec.name, &spec.version, output);
            if let Some(suppressed) = DIFFERS_LOG.lock().unwrap_or_else(|p| p.into_inner()).check() {
                tracing::warn!(
                    model = %spec.name, version = %primary, shadow_version = %spec.version, request_id, instance, output,
                    answered = %was, shadow = %now, suppressed, "shadow differs"
                );
            }
        }
    }
    metrics.shadow_run(&spec.name, &spec.version, if differed { "differs" } else { "same" });
}
