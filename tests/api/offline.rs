//! `inferd replay` and `inferd score`, run as the real binary on the committed models.

use std::io::Write;
use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::{reference, TestApp};
use crate::process::inferd;

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The prediction log of a server that answered the 32 reference rows of house_price.
async fn logged_reference_traffic() -> tempfile::TempDir {
    let app = TestApp::spawn().await;
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    assert_eq!(app.predict(&rows).await.status(), 200);
    app.stop().await.expect("a temporary prediction log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_compares_every_logged_answer_and_fails_on_drift() {
    let logs = logged_reference_traffic().await;
    let out = inferd().arg("replay").arg(logs.path()).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("replayed 32 instances of house_price"), "{stdout}");
    assert!(stdout.contains("identical         32"), "{stdout}");

    // The same lines, three of them with a price 1% off, gzipped.
    let file = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let mut lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in lines.iter_mut().take(3) {
        let price = line["outputs"]["price"].as_f64().unwrap();
        line["outputs"]["price"] = json!(price * 1.01);
    }
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("drifted.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    for line in &lines {
        writeln!(encoder, "{line}").unwrap();
    }
    writeln!(encoder, "a line that is not a log line").unwrap();
    encoder.finish().unwrap();

    let out = inferd().args(["replay", "--format", "json"]).arg(&gz).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "differences fail the run: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!((report["replayed"].as_u64(), report["identical"].as_u64()), (Some(32), Some(29)), "{report}");
    assert_eq!((report["different"].as_u64(), report["unreadable"].as_u64()), (Some(3), Some(1)), "{report}");
    let worst = report["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 3, "{report}");
    assert_eq!(worst[0]["output"], "price");
    assert_eq!(worst[0]["request_id"], lines[0]["request_id"]);
    let relative = report["outputs"]["price"]["max_relative"].as_f64().unwrap();
    assert!((0.0098..0.0100).contains(&relative), "1% over the replayed price: {relative}");
    assert!(report["rows_per_second"].as_f64().unwrap() > 0.0);

    // Within a 2% tolerance: passes; outside the time range or of another model: nothing.
    let out = inferd().args(["replay", "--relative", "0.02", "--format", "json"]).arg(&gz).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["within_tolerance"], 3);
    let glob = format!("{}/*.gz", dir.path().display());
    let out = inferd().args(["replay", "--since", "2999-01-01T00:00:00Z", "--format", "json", &glob]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lines"], 0, "{report}");
    let out = inferd().args(["replay", "--model", "house_price_linear", "--format", "json", &glob]).output().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["lines"], 0);

    let out = inferd().args(["replay", "--version", "9"]).arg(&gz).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("version '9' is not in runtime.toml"), "{stderr}");
}

#[test]
fn score_writes_predictions_in_order_and_reports_bad_rows_by_line() {
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let dir = tempfile::tempdir().unwrap();
    let mut jsonl: Vec<String> = reference.instances.iter().map(Value::to_string).collect();
    jsonl.insert(3, r#"{"lotsize": 5000, "bedrooms": 99}"#.into());
    jsonl.insert(5, "not json".into());
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, jsonl.join("\n") + "\n").unwrap();
    let out = inferd().arg("score").arg("--input").arg(&input).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "refused rows fail the run: {stderr}");
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 32, "{stdout}");
    let lines: Vec<u64> = answers.iter().map(|a| a["line"].as_u64().unwrap()).collect();
    let expected_lines: Vec<u64> = (1..=34).filter(|l| ![4, 6].contains(l)).collect();
    assert_eq!(lines, expected_lines, "input order, by line");
    for (answer, want) in answers.iter().zip(&reference.expected) {
        let got = answer["outputs"]["price"].as_f64().unwrap();
        assert!((got - want).abs() <= want.abs() * 1e-5, "{got} vs {want}");
    }
    let line4 = stderr.lines().find(|l| l.starts_with("line 4: ")).expect("line 4 reported");
    assert!(line4.contains("/bedrooms: must be <= 10, got 99") && line4.contains("/bathrms: is required"), "{line4}");
    assert!(stderr.contains("line 6: not JSON"), "{stderr}");
    assert!(stderr.contains("32 rows scored, 2 refused"), "{stderr}");

    // CSV in (typed by the schema), CSV out.
    let fields: Vec<String> = reference.instances[0].as_object().unwrap().keys().cloned().collect();
    let mut csv = fields.join(",") + "\n";
    for row in &reference.instances[..4] {
        let cells: Vec<String> = fields
            .iter()
            .map(|f| match &row[f] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        csv += &(cells.join(",") + "\n");
    }
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, csv).unwrap();
    let output = dir.path().join("out.csv");
    let out = inferd().arg("score").arg("--input").arg(&input).arg("--output").arg(&output).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let written = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows[0], "line,price");
    assert_eq!(rows.len(), 5, "{written}");
    assert!(rows[1].starts_with("2,"), "the header is line 1: {written}");
}

/// The offline readers' line limit, and the lines the tests send past it: long enough that
/// holding one would show in the peak RSS.
const LIMIT: usize = inferd::offline::lines::MAX_LINE_BYTES;
const LONG: usize = 100 << 20;
/// What a long line may add to a run's peak RSS over the same run without it: the line buffer
/// (the limit) and slack for the allocator (measured: about 12 MiB in all); holding the line
/// would cost its length.
const BUDGET: u64 = (LIMIT + (24 << 20)) as u64;

/// What a run of the binary gave.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Its peak RSS in bytes (VmHWM: its own, counted from its exec), read once `feed` has
    /// written everything and before stdin closes: by then the child has read all of it but
    /// a pipe's worth, so a line it holds whole shows in the peak.
    peak: u64,
}

fn run_measured(
    command: &mut std::process::Command,
    feed: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()>,
) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            pipe.read_to_end(&mut text).unwrap();
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    let fed = feed(&mut stdin);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    drop(stdin);
    let code = child.wait().unwrap().code();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(fed.is_ok(), "the child stopped reading its input: {fed:?} {stderr}");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().strip_suffix(" kB"));
    let peak = kib.and_then(|k| k.parse::<u64>().ok()).unwrap_or_else(|| panic!("no VmHWM in {status}")) << 10;
    Measured { code, stdout, stderr, peak }
}

/// Writes `len` bytes of `x`, 1 MiB at a time.
fn write_xs(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    let block = vec![b'x'; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        out.write_all(&block[..n])?;
        left -= n;
    }
    Ok(())
}

/// A blank line of 4 MiB that compresses poorly, fed last: once it is written, the child has
/// read everything before it (all but a pipe's and a reader's buffer of it are read too).
fn blank_line() -> Vec<u8> {
    let mut random = fastrand::Rng::with_seed(18);
    let mut line: Vec<u8> = (0..4 << 20).map(|_| [b' ', b'\t', b'\x0c', b' '][random.usize(..4)]).collect();
    line.push(b'\n');
    line
}

fn lines_of(stdout: &str) -> Vec<u64> {
    stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["line"].as_u64().unwrap()).collect()
}

#[test]
fn score_refuses_an_over_long_line_by_number_without_holding_it() {
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    let blank = blank_line();
    let score = |long: bool| {
        run_measured(inferd().args(["score", "--input", "-"]), |stdin| {
            writeln!(stdin, "{}", rows[0])?;
            if long {
                write!(stdin, "{{\"lotsize\": \"")?;
                write_xs(stdin, LONG)?;
                writeln!(stdin, "\"}}")?;
            } else {
                writeln!(stdin, "{}", rows[2])?;
            }
            writeln!(stdin, "{}", rows[1])?;
            if long {
                // Within the limit, but a field holds an array: the decoder would keep it whole.
                writeln!(stdin, "{{\"lotsize\": [{}0]}}", "0,".repeat(2 << 20))?;
            }
            stdin.write_all(&blank)
        })
    };
    let baseline = score(false);
    assert_eq!(baseline.code, Some(0), "{}", baseline.stderr);
    assert_eq!(lines_of(&baseline.stdout), [1, 2, 3]);

    let run = score(true);
    assert_eq!(run.code, Some(1), "a refused line fails the run: {}", run.stderr);
    assert_eq!(lines_of(&run.stdout), [1, 3], "the rows around it are scored: {}", run.stderr);
    let refusal = format!("line 2: longer than the limit of {LIMIT} bytes ({} bytes)", LONG + 15);
    assert!(run.stderr.contains(&refusal), "{}", run.stderr);
    assert!(run.stderr.contains("line 4: an array or object inside the instance"), "{}", run.stderr);
    assert!(run.peak < baseline.peak + BUDGET, "peak RSS {} with the long line, {} without", run.peak, baseline.peak);
}

#[test]
fn score_refuses_a_huge_csv_cell_by_its_line_and_counts_lines_inside_quotes() {
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let fields: Vec<String> = reference.instances[0].as_object().unwrap().keys().cloned().collect();
    let row = |i: usize| -> String {
        let cells: Vec<String> = fields
            .iter()
            .map(|f| match &reference.instances[i][f] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        cells.join(",")
    };
    let (header, first, last) = (fields.join(","), row(0), row(1));
    let blank = blank_line();
    let score = |huge: bool| {
        let mut command = inferd();
        command.args(["score", "--input", "-", "--input-format", "csv"]);
        run_measured(&mut command, |stdin| {
            writeln!(stdin, "{header}\n{first}")?;
            if huge {
                // Line 3 opens a quoted cell of 100 lines of 1 MiB: the next row is on line 104.
                write!(stdin, "\"")?;
                for _ in 0..LONG >> 20 {
                    write_xs(stdin, (1 << 20) - 1)?;
                    writeln!(stdin)?;
                }
                writeln!(stdin, "\"{}", &first[first.find(',').unwrap()..])?;
            }
            writeln!(stdin, "{last}")?;
            if huge {
                // Within the limit, but no number: named, not echoed whole.
                write_xs(stdin, 1 << 20)?;
                writeln!(stdin, "{}", &first[first.find(',').unwrap()..])?;
            }
            stdin.write_all(&blank)
        })
    };
    let baseline = score(false);
    assert_eq!((baseline.code, lines_of(&baseline.stdout)), (Some(0), vec![2, 3]), "{}", baseline.stderr);
    let run = score(true);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(lines_of(&run.stdout), [2, 104], "{}", run.stderr);
    let refusal = format!("line 3: longer than the limit of {LIMIT} bytes");
    assert!(run.stderr.contains(&refusal), "{}", run.stderr);
    let cell = format!("line 105: {}: \"{}\"… ({} bytes) is not a number", fields[0], "x".repeat(64), 1 << 20);
    assert!(run.stderr.contains(&cell) && run.stderr.len() < 4096, "{}", &run.stderr[..run.stderr.len().min(4096)]);
    assert!(run.peak < baseline.peak + BUDGET, "peak RSS {} with the huge cell, {} without", run.peak, baseline.peak);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_skips_an_over_long_gzipped_line_by_file_and_line_without_holding_it() {
    let logs = logged_reference_traffic().await;
    let file = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let gzip = |text: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    };
    // Gzip members one after another are one stream: line 4 is 100 members of 1 MiB of `x`.
    let (head, tail) = (
        gzip((lines[..3].join("\n") + "\n").as_bytes()),
        gzip(("\n".to_owned() + &lines[3..].join("\n") + "\n").as_bytes()),
    );
    let (block, blank) = (gzip(&vec![b'x'; 1 << 20]), gzip(&blank_line()));
    let replay = |feed: &mut dyn FnMut(&mut std::process::ChildStdin) -> std::io::Result<()>| {
        run_measured(inferd().args(["replay", "--format", "json", "-"]), feed)
    };
    let baseline = replay(&mut |stdin| [&head, &tail, &blank].iter().try_for_each(|part| stdin.write_all(part)));
    assert_eq!(baseline.code, Some(0), "{}{}", baseline.stdout, baseline.stderr);
    let run = replay(&mut |stdin| {
        stdin.write_all(&head)?;
        for _ in 0..LONG >> 20 {
            stdin.write_all(&block)?;
        }
        stdin.write_all(&tail)?;
        stdin.write_all(&blank)
    });
    assert_eq!(run.code, Some(0), "an unreadable line does not fail the run: {}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    assert_eq!((report["replayed"].as_u64(), report["identical"].as_u64()), (Some(32), Some(32)), "{report}");
    assert_eq!(report["unreadable"], 1, "{report}");
    let note = format!("stdin:4: longer than the limit of {LIMIT} bytes ({LONG} bytes)");
    assert!(run.stderr.contains(&note), "{}", run.stderr);
    assert!(run.peak < baseline.peak + BUDGET, "peak RSS {} with the long line, {} without", run.peak, baseline.peak);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_never_calls_an_answer_it_cannot_compare_identical() {
    let logs = logged_reference_traffic().await;
    let file = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let mut lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    // serde_json cannot hold 1e400: the logged text is edited as text.
    let with_outputs = |line: &str, outputs: Option<&str>| {
        let mut value: Value = serde_json::from_str(line).unwrap();
        let map = value.as_object_mut().unwrap();
        map.remove("outputs");
        let text = value.to_string();
        match outputs {
            Some(outputs) => format!("{},\"outputs\":{outputs}}}", &text[..text.len() - 1]),
            None => text,
        }
    };
    // The last: far longer than any price, so never parsed.
    let huge = format!(r#"{{"price":[{}]}}"#, ["0.0"; 10_000].join(","));
    let wrong = [
        Some(r#"{"price":1e400}"#),
        Some(r#"{"price":-1e400}"#),
        Some("{}"),
        None,
        Some(r#"{"price":"67994.12"}"#),
        Some("[]"),
        Some(huge.as_str()),
    ];
    for (line, outputs) in lines.iter_mut().zip(wrong) {
        *line = with_outputs(line, outputs);
    }
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();

    let out = inferd().args(["replay", "--format", "json"]).arg(&edited).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "wrong answers fail the run: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!((report["replayed"].as_u64(), report["identical"].as_u64()), (Some(32), Some(25)), "{report}");
    assert_eq!((report["different"].as_u64(), report["unreadable"].as_u64()), (Some(7), Some(0)), "{report}");
    let worst: Vec<&Value> = report["worst"].as_array().unwrap().iter().collect();
    assert_eq!(worst.len(), 7, "{report}");
    let line_of = |d: &&Value| d["line"].as_u64().unwrap();
    let mut listed: Vec<u64> = worst.iter().map(line_of).collect();
    listed.sort();
    assert_eq!(listed, [1, 2, 3, 4, 5, 6, 7], "{report}");
    for d in &worst {
        assert_eq!(d["output"], "price", "{d}");
        assert!(d["replayed"].as_f64().is_some_and(f64::is_finite), "{d}");
        assert!(d["note"].is_string() || d["absolute"].is_null(), "{d}");
    }
    assert_eq!(report["outputs"]["price"]["different"], 7, "{report}");
    let note = |line: u64| worst.iter().find(|d| line_of(d) == line).unwrap()["note"].as_str().unwrap_or_default();
    assert!(note(1).contains("number out of range"), "{report}");
    assert!(note(7).contains("far more than the replayed answer"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_lists_each_refused_instance_with_file_line_and_reason() {
    let logs = logged_reference_traffic().await;
    let file = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let mut lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Lines 2 and 5 hold what the target refuses.
    lines[1]["inputs"]["bedrooms"] = json!(99);
    lines[4]["inputs"].as_object_mut().unwrap().remove("bathrms");
    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, lines.iter().map(|l| l.to_string() + "\n").collect::<String>()).unwrap();

    let out = inferd().args(["replay", "--format", "json"]).arg(&edited).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "refused instances fail the run: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!((report["replayed"].as_u64(), report["refused"].as_u64()), (Some(30), Some(2)), "{report}");
    let refusals = report["refusals"].as_array().expect("refusals listed");
    assert_eq!(refusals.len(), 2, "{report}");
    assert_eq!(refusals[0]["file"], edited.display().to_string(), "{report}");
    assert_eq!((refusals[0]["line"].as_u64(), refusals[1]["line"].as_u64()), (Some(2), Some(5)), "{report}");
    assert_eq!(refusals[0]["request_id"], lines[1]["request_id"]);
    assert!(refusals[0]["reason"].as_str().unwrap().contains("/bedrooms: must be <= 10, got 99"), "{report}");
    assert!(refusals[1]["reason"].as_str().unwrap().contains("/bathrms: is required"), "{report}");

    let out = inferd().arg("replay").arg(&edited).output().unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("refused           2"), "{stdout}");
    // One request's instances, one per line: line 2 holds its instance 1.
    let id = lines[1]["request_id"].as_str().unwrap();
    let listed = format!("  {}:2 request {id} instance 1: /bedrooms: must be <= 10, got 99", edited.display());
    assert!(stdout.contains(&listed), "{stdout}");
}

/// The first rows of house_price's reference as CSV, with an `id` column first.
fn csv_with_ids(rows: usize) -> String {
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let fields: Vec<String> = reference.instances[0].as_object().unwrap().keys().cloned().collect();
    let mut csv = format!("id,{}\n", fields.join(","));
    for (i, row) in reference.instances[..rows].iter().enumerate() {
        let cells: Vec<String> = fields
            .iter()
            .map(|f| match &row[f] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        csv += &format!("r{i},{}\n", cells.join(","));
    }
    csv
}

#[test]
fn score_keeps_the_columns_the_model_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, csv_with_ids(3)).unwrap();

    // CSV out: line, the kept id, the outputs.
    let output = dir.path().join("out.csv");
    let out = inferd().arg("score").arg("--input").arg(&input).arg("--output").arg(&output).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "an extra column refuses no row: {}", text(&out).1);
    let written = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows[0], "line,id,price", "{written}");
    assert!(rows[1].starts_with("2,r0,") && rows[3].starts_with("4,r2,"), "{written}");

    // JSON Lines out: the id beside the outputs.
    let out = inferd().arg("score").arg("--input").arg(&input).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    assert_eq!((answers[0]["line"].as_u64(), &answers[0]["id"]), (Some(2), &json!("r0")), "{stdout}");
    assert!(answers[2]["outputs"]["price"].is_number(), "{stdout}");

    // JSON Lines in: members that are not fields are kept as they were, even named `line`.
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let mut row = reference.instances[0].clone();
    row["id"] = json!(17);
    row["line"] = json!("mine");
    let mut bad = reference.instances[1].clone();
    bad["id"] = json!(18);
    bad["bedrooms"] = json!(99);
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, format!("{row}\n{bad}\n")).unwrap();
    let out = inferd().arg("score").arg("--input").arg(&input).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!((&answer["line"], &answer["id"], &answer["input.line"]), (&json!(1), &json!(17), &json!("mine")));
    let want = reference.expected[0];
    assert!((answer["outputs"]["price"].as_f64().unwrap() - want).abs() <= want.abs() * 1e-5, "{answer}");
    // A refused row says why, by line.
    assert!(stderr.contains("line 2: /bedrooms: must be <= 10, got 99"), "{stderr}");
}

#[test]
fn score_refuses_a_csv_without_a_header_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let with_header = csv_with_ids(2);
    // Without its header: one row (once taken as a header and "0 rows scored"), then two.
    for rows in [1, 2] {
        let headerless: String = with_header.lines().skip(1).take(rows).map(|l| format!("{l}\n")).collect();
        let input = dir.path().join(format!("headerless{rows}.csv"));
        std::fs::write(&input, headerless).unwrap();
        let out = inferd().arg("score").arg("--input").arg(&input).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert_eq!(stdout, "", "nothing scored");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("the first line names no field of model 'house_price'"), "{stderr}");
        assert!(stderr.contains("lotsize"), "names the fields: {stderr}");
    }
}
