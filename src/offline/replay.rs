//! `inferd replay`: every instance of the prediction log, re-scored on a chosen version (or an
//! `.onnx` file with its schema) and compared with the answer logged.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::lines::{Line, Lines, Split};
use super::sources::{Filter, Sources};
use super::{load_target, nested, retire, Runner, Scored};
use crate::cli::{ReplayArgs, ReportFormat};
use crate::config::Config;
use crate::model::golden::{numeric_pairs, Tolerance};

/// Unreadable lines reported one by one on stderr, and refused instances listed in the report
/// (with why); beyond, they are only counted.
const MAX_REPORTED: u64 = 100;

/// A logged output whose text is longer than this many times the whole replayed answer's (and
/// 1 KiB) cannot be the same answer: it is not parsed (a `Value` takes many times its text).
const LOGGED_TO_REPLAYED: usize = 16;

/// Where a replayed instance came from, to name it in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: u64,
    pub request_id: String,
    pub instance: u64,
}

/// An instance the target refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    #[serde(flatten)]
    pub origin: Origin,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    #[serde(flatten)]
    pub origin: Origin,
    pub output: String,
    pub logged: Value,
    pub replayed: Value,
    /// Largest absolute and relative difference over the output's numbers; `null` when it
    /// differs in what is not a number (a label, a shape).
    pub absolute: Option<f64>,
    pub relative: Option<f64>,
    /// Why the logged answer cannot be compared (missing, unreadable, not a finite number):
    /// then `logged` shows the start of its text, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct OutputDiff {
    /// Instances whose answer for this output is beyond the tolerance or cannot be compared.
    pub different: u64,
    pub max_absolute: f64,
    pub max_relative: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub model: String,
    pub target: String,
    pub files: usize,
    /// Lines read (of the model, in the time range) and the instances replayed from them.
    pub lines: u64,
    pub replayed: u64,
    pub identical: u64,
    pub within_tolerance: u64,
    /// Instances with an output beyond the tolerance, or one that cannot be compared.
    pub different: u64,
    /// Lines that are not prediction-log lines (or longer than the limit), and instances the
    /// target refused.
    pub unreadable: u64,
    pub refused: u64,
    /// The first [`MAX_REPORTED`] refused instances, in input order, with why.
    pub refusals: Vec<Refusal>,
    pub outputs: BTreeMap<String, OutputDiff>,
    /// The largest differences, worst first.
    pub worst: Vec<Difference>,
    pub tolerance: ToleranceOut,
    pub rows_per_second: f64,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ToleranceOut {
    pub absolute: f64,
    pub relative: f64,
}

fn parse_time(text: &Option<String>, what: &str) -> Result<Option<OffsetDateTime>, String> {
    text.as_deref()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(|e| format!("--{what} {t:?} is not an RFC 3339 time: {e}")))
        .transpose()
}

pub async fn run(args: &ReplayArgs) -> ExitCode {
    match replay(args).await {
        Ok(report) => {
            match args.format {
                ReportFormat::Json => {
                    crate::stdout::print(&format!("{}\n", serde_json::to_string_pretty(&report).expect("JSON")))
                }
                ReportFormat::Table => crate::stdout::print(&table(&report)),
            }
            if report.different > 0 || report.refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("inferd replay: {e}");
            ExitCode::from(2)
        }
    }
}

pub async fn replay(args: &ReplayArgs) -> Result<Report, String> {
    let config = Config::load(&args.serve).map_err(|e| e.to_string())?;
    let (since, until) = (parse_time(&args.since, "since")?, parse_time(&args.until, "until")?);
    let model = match &args.model {
        Some(model) => model.clone(),
        None => config.default_model().name.clone(),
    };
    let filter =
        Filter { model: &model, since: args.since.as_deref(), until: args.until.as_deref(), table: &args.table };
    let mut sources = Sources::resolve(&args.logs, &filter).await?;
    let onnx = args.onnx.clone().zip(args.schema.clone());
    let target = tokio::task::block_in_place(|| load_target(&config, &model, args.version.as_deref(), onnx))?;
    let report: Result<Report, String> = async {
        let tolerance = Tolerance { absolute: args.absolute, relative: args.relative };
        let mut report = Report {
            model: model.clone(),
            target: match &args.onnx {
                Some(path) => path.display().to_string(),
                None => format!("{model} version {}", target.batcher.spec().version),
            },
            files: sources.count,
            tolerance: ToleranceOut { absolute: tolerance.absolute, relative: tolerance.relative },
            ..Report::default()
        };
        let mut runner = Runner::new(target.clone());
        let mut chunk = runner.chunk();
        let mut pending: Pending = Default::default();
        let keep = args.worst;
        let compare = |pending: &mut Pending, report: &mut Report, scored: Vec<Scored>| {
            for scored in scored {
                let (origin, logged) = pending.pop_front().expect("one logged answer per instance");
                judge(report, origin, &logged, scored, tolerance, keep);
            }
        };
        while let Some((file_name, reader)) = sources.next().await? {
            let cannot_read = |e: std::io::Error| format!("cannot read {file_name}: {e}");
            let mut lines = Lines::new(reader, Split::Newline);
            while let Some(line) = lines.next_line().map_err(cannot_read)? {
                let (number, text) = match line {
                    Line::TooLong { number, bytes } => {
                        unreadable(&mut report, &file_name, number, &Line::too_long(bytes));
                        continue;
                    }
                    Line::Text { number, text } => (number, text),
                };
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let entry = match serde_json::from_slice::<Logged<'_>>(text) {
                    Ok(entry) => entry,
                    Err(e) => {
                        unreadable(&mut report, &file_name, number, &format!("not a prediction-log line: {e}"));
                        continue;
                    }
                };
                if entry.model != model.as_str() {
                    continue;
                }
                let at = OffsetDateTime::parse(&entry.ts, &Rfc3339).ok();
                if since.is_some_and(|s| at.is_none_or(|at| at < s))
                    || until.is_some_and(|u| at.is_none_or(|at| at >= u))
                {
                    continue;
                }
                report.lines += 1;
                let origin = Origin {
                    file: file_name.clone(),
                    line: number,
                    request_id: entry.request_id.into_owned(),
                    instance: entry.instance,
                };
                if let Some(why) = nested(entry.inputs.get().as_bytes()) {
                    refuse(&mut report, origin, why);
                    continue;
                }
                // A line without outputs is replayed too: its answer is then missing, not skipped.
                let logged = entry.outputs.map_or("", |o| o.get());
                chunk.add(entry.inputs.get().to_owned(), logged.len());
                pending.push_back((origin, logged.to_owned()));
                if chunk.is_full() {
                    let full = std::mem::replace(&mut chunk, runner.chunk());
                    runner.push(full, &mut |s| compare(&mut pending, &mut report, s)).await;
                }
            }
        }
        if !chunk.is_empty() {
            runner.push(chunk, &mut |s| compare(&mut pending, &mut report, s)).await;
        }
        report.rows_per_second = runner.finish(&mut |s| compare(&mut pending, &mut report, s)).await;
        report.seconds = runner.busy.as_secs_f64();
        report.worst.sort_by(|a, b| worst_first(b).total_cmp(&worst_first(a)));
        report.worst.truncate(keep);
        Ok(report)
    }
    .await;
    retire(&target);
    report
}

/// Counts a line that is not read, and names it on stderr (the report is on stdout).
fn unreadable(report: &mut Report, file: &str, line: u64, why: &str) {
    report.unreadable += 1;
    if report.unreadable <= MAX_REPORTED {
        eprintln!("{file}:{line}: {why}; counted as unreadable");
    } else if report.unreadable == MAX_REPORTED + 1 {
        eprintln!("more unreadable lines are counted, not listed");
    }
}

/// Counts an instance the target refused, and keeps the first [`MAX_REPORTED`] with why.
fn refuse(report: &mut Report, origin: Origin, reason: String) {
    report.refused += 1;
    if report.refusals.len() < MAX_REPORTED as usize {
        report.refusals.push(Refusal { origin, reason });
    }
}

/// Instances sent and not yet answered, with the answer logged for each (its JSON text).
type Pending = std::collections::VecDeque<(Origin, String)>;

/// The fields of a prediction-log line that replay reads; inputs and outputs stay text.
#[derive(serde::Deserialize)]
struct Logged<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    request_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    instance: u64,
    #[serde(borrow)]
    inputs: &'a RawValue,
    #[serde(borrow, default)]
    outputs: Option<&'a RawValue>,
}

/// How bad a difference is, for ordering: a non-numeric one is worst.
fn worst_first(d: &Difference) -> f64 {
    d.relative.unwrap_or(f64::INFINITY)
}

fn judge(report: &mut Report, origin: Origin, logged: &str, scored: Scored, tolerance: Tolerance, keep: usize) {
    let replayed = match scored {
        Scored::Outputs(replayed) => replayed,
        Scored::Refused(errors) => {
            let reasons: Vec<String> = errors
                .iter()
                .map(|e| if e.path.is_empty() { e.message.clone() } else { format!("{}: {}", e.path, e.message) })
                .collect();
            refuse(report, origin, reasons.join("; "));
            return;
        }
    };
    report.replayed += 1;
    // Both written by the same code: the same answer is the same text.
    if logged == replayed {
        report.identical += 1;
        return;
    }
    let largest = LOGGED_TO_REPLAYED * replayed.len() + 1024;
    let replayed = serde_json::from_str::<Map<String, Value>>(&replayed).unwrap_or_default();
    // The logged outputs stay text until compared one by one; far too long, they are not even
    // split into outputs (reading them again would double the time of a run of such lines).
    let parsed = if logged.len() > largest { None } else { Some(serde_json::from_str(logged)) };
    let (logged, missing): (BTreeMap<String, &RawValue>, String) = match parsed {
        None => {
            (BTreeMap::new(), format!("{} bytes of outputs logged, far more than the replayed answer", logged.len()))
        }
        Some(Ok(outputs)) => (outputs, "missing from the log".to_owned()),
        Some(Err(_)) if logged.is_empty() => (BTreeMap::new(), "the line has no outputs".to_owned()),
        Some(Err(e)) => (BTreeMap::new(), format!("the logged outputs are not an object: {e}")),
    };
    // Every output of either side: one missing from the other cannot be called the same.
    let extra = logged.keys().filter(|name| !replayed.contains_key(*name));
    let names: Vec<&String> = replayed.keys().chain(extra).collect();
    let (mut identical, mut within) = (true, true);
    for name in names {
        let now = replayed.get(name).cloned().unwrap_or(Value::Null);
        let (was, mut note) = match logged.get(name) {
            None => (Value::Null, Some(missing.clone())),
            Some(raw) => match read_logged(raw.get(), largest) {
                Ok(was) => (was, None),
                Err((shown, why)) => (shown, Some(why)),
            },
        };
        if note.is_none() && !replayed.contains_key(name) {
            note = Some("not an output of the replayed version".into());
        }
        if note.is_none() && was == now {
            continue;
        }
        identical = false;
        let diff = report.outputs.entry(name.clone()).or_default();
        let pairs = if note.is_none() { numeric_pairs(&was, &now) } else { None };
        let (absolute, relative, ok) = match pairs {
            Some(pairs) => {
                let abs = pairs.iter().map(|(e, g)| (g - e).abs()).fold(0.0, f64::max);
                let rel = pairs.iter().map(|(e, g)| relative(*e, *g)).fold(0.0, f64::max);
                diff.max_absolute = diff.max_absolute.max(abs);
                diff.max_relative = diff.max_relative.max(rel);
                (Some(abs), Some(rel), pairs.iter().all(|(e, g)| tolerance.accepts(*e, *g)))
            }
            None => (None, None, false),
        };
        if !ok {
            within = false;
            diff.different += 1;
        }
        if keep > 0 {
            report.worst.push(Difference {
                origin: origin.clone(),
                output: name.clone(),
                logged: was,
                replayed: now,
                absolute,
                relative,
                note,
            });
            // Kept small as it grows: the worst `keep` so far.
            if report.worst.len() > keep.max(1) * 4 {
                report.worst.sort_by(|a, b| worst_first(b).total_cmp(&worst_first(a)));
                report.worst.truncate(keep);
            }
        }
    }
    match (identical, within) {
        (true, _) => report.identical += 1,
        (false, true) => report.within_tolerance += 1,
        (false, false) => report.different += 1,
    }
}

/// A logged output's value; or, when it cannot be compared, what to show of it and why: a
/// number JSON cannot hold in an f64 (`1e400`), broken JSON, or text longer than `largest`.
fn read_logged(text: &str, largest: usize) -> Result<Value, (Value, String)> {
    let shown = || {
        let end = (0..=text.len().min(64)).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        Value::String(if end < text.len() { format!("{}…", &text[..end]) } else { text.to_owned() })
    };
    if text.len() > largest {
        return Err((shown(), format!("{} bytes logged, far more than the replayed answer", text.len())));
    }
    serde_json::from_str(text).map_err(|e| (shown(), format!("the logged value cannot be read: {e}")))
}

fn relative(expected: f64, got: f64) -> f64 {
    let d = (got - expected).abs();
    if d == 0.0 {
        0.0
    } else if expected == 0.0 {
        f64::INFINITY
    } else {
        d / expected.abs()
    }
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "replayed {} instances of {} ({} files, {} lines) on {}\n\
         identical         {}\n\
         within tolerance  {}  (absolute {}, relative {})\n\
         different         {}\n\
         refused           {}\n\
         unreadable lines  {}\n\
         {:.0} rows/s ({:.2} s)\n",
        r.replayed,
        r.model,
        r.files,
        r.lines,
        r.target,
        r.identical,
        r.within_tolerance,
        r.tolerance.absolute,
        r.tolerance.relative,
        r.different,
        r.refused,
        r.unreadable,
        r.rows_per_second,
        r.seconds
    );
    if !r.refusals.is_empty() {
        out += "refused:\n";
    }
    for f in &r.refusals {
        out += &format!(
            "  {}:{} request {} instance {}: {}\n",
            f.origin.file, f.origin.line, f.origin.request_id, f.origin.instance, f.reason
        );
    }
    if r.refused > r.refusals.len() as u64 {
        out += &format!("  ... {} more refused, counted, not listed\n", r.refused - r.refusals.len() as u64);
    }
    for (name, d) in &r.outputs {
        out += &format!(
            "output {name}: {} different, max absolute difference {}, max relative {}\n",
            d.different, d.max_absolute, d.max_relative
        );
    }
    if !r.worst.is_empty() {
        out += "worst:\n";
    }
    for d in &r.worst {
        out += &format!(
            "  {}:{} request {} instance {}: {} logged {} replayed {}{}\n",
            d.origin.file,
            d.origin.line,
            d.origin.request_id,
            d.origin.instance,
            d.output,
            d.logged,
            d.replayed,
            d.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    out
}
