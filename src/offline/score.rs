//! `inferd score`: batch scoring. Instances from a CSV or JSON Lines file (or stdin) are
//! checked against the model's schema, run through the batching core, and written as JSON
//! Lines (or CSV) in input order; a bad row is reported by its line number and skipped.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::lines::{Line, Lines, Split};
use super::{load_target, nested, retire, Runner, Scored};
use crate::cli::{RowFormat, ScoreArgs};
use crate::config::Config;
use crate::model::ModelSpec;

/// Bad rows reported one by one on stderr; beyond, they are only counted.
const MAX_REPORTED: u64 = 1000;

pub async fn run(args: &ScoreArgs) -> ExitCode {
    match score(args).await {
        Ok(summary) => {
            eprintln!(
                "inferd score: {} rows scored, {} refused, {:.0} rows/s",
                summary.scored, summary.refused, summary.rows_per_second
            );
            if summary.refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("inferd score: {e}");
            ExitCode::from(2)
        }
    }
}

pub struct Summary {
    pub scored: u64,
    pub refused: u64,
    pub rows_per_second: f64,
}

fn format_of(path: &Path, given: Option<RowFormat>) -> RowFormat {
    given.unwrap_or(match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => RowFormat::Csv,
        _ => RowFormat::Jsonl,
    })
}

/// A row's line number, and its instance as JSON text with the columns kept beside it, or why
/// it is refused.
type Row = (u64, Result<(String, Kept), String>);

/// The columns of a row the model does not take (an id, say), by name: not sent to the model,
/// written back beside its outputs so that they can be joined to the input.
type Kept = Vec<(String, Value)>;

/// How many of the model's fields a message lists.
const FIELDS_SHOWN: usize = 8;

/// Input rows, each with its line number (1-based: a CSV's header is line 1, and a quoted
/// cell spanning lines counts every line).
struct Rows {
    lines: Lines<Box<dyn BufRead>>,
    /// A CSV's columns, typed by the schema (`None`: not a field of the model, kept); `None`
    /// for JSON Lines.
    columns: Option<Vec<(String, Option<&'static str>)>>,
    /// The model's fields; `None` when its schema names none (every column is then sent).
    fields: Option<HashSet<String>>,
}

/// The fields the schema names (its `properties`), or `None` when it names none.
fn fields_of(spec: &ModelSpec) -> Option<HashSet<String>> {
    let properties = spec.schema.document()["properties"].as_object()?;
    Some(properties.keys().cloned().collect())
}

impl Rows {
    fn new(input: Box<dyn BufRead>, format: RowFormat, spec: &ModelSpec) -> Result<Self, String> {
        let fields = fields_of(spec);
        if format == RowFormat::Jsonl {
            return Ok(Rows { lines: Lines::new(input, Split::Newline), columns: None, fields });
        }
        let mut lines = Lines::new(input, Split::Csv);
        let header = loop {
            match lines.next_line().map_err(|e| format!("cannot read: {e}"))? {
                None => return Err("the CSV has no header row".into()),
                Some(Line::TooLong { number, bytes }) => {
                    return Err(format!("the CSV header (line {number}) is {}", Line::too_long(bytes)))
                }
                Some(Line::Text { text, .. }) if text.iter().all(u8::is_ascii_whitespace) => continue,
                Some(Line::Text { number, text }) => {
                    break csv_record(text).map_err(|e| format!("the CSV header (line {number}): {e}"))?
                }
            }
        };
        if let Some(fields) = &fields {
            // A CSV without a header would have its first row taken as one, and every row then
            // refused (or none scored, for one row): said once, as the run's error.
            if !header.iter().any(|h| fields.contains(h)) {
                let mut names: Vec<&str> = spec.schema.fields().iter().map(|(f, _)| f.as_str()).collect();
                let more = names.len().saturating_sub(FIELDS_SHOWN);
                names.truncate(FIELDS_SHOWN);
                return Err(format!(
                    "the first line names no field of model '{}', so it is not a header: the CSV's first line \
                     must name its columns ({}{})",
                    spec.name,
                    names.join(","),
                    if more > 0 { format!(",... {more} more") } else { String::new() }
                ));
            }
        }
        let columns = header
            .iter()
            .map(|h| {
                let field = fields.as_ref().is_none_or(|f| f.contains(h));
                (h.to_owned(), field.then(|| kind_of(spec, h)))
            })
            .collect();
        Ok(Rows { lines, columns: Some(columns), fields })
    }

    /// The kept columns' names, in order, for a CSV input; `None` for JSON Lines.
    fn kept_names(&self) -> Option<Vec<String>> {
        let columns = self.columns.as_ref()?;
        Some(columns.iter().filter(|(_, kind)| kind.is_none()).map(|(name, _)| name.clone()).collect())
    }

    /// The next row as JSON text, or why it is refused; `Err` when the input cannot be read.
    fn next(&mut self) -> Result<Option<Row>, String> {
        loop {
            let Some(line) = self.lines.next_line().map_err(|e| format!("cannot read: {e}"))? else {
                return Ok(None);
            };
            let (number, text) = match line {
                Line::TooLong { number, bytes } => return Ok(Some((number, Err(Line::too_long(bytes))))),
                Line::Text { number, text } => (number, text),
            };
            let row = match &self.columns {
                _ if text.iter().all(u8::is_ascii_whitespace) => continue,
                // Parsed by the model's decoder; a line that is not JSON is reported by it.
                None => match nested(text) {
                    Some(why) => Err(why),
                    None => std::str::from_utf8(text)
                        .map_err(|e| format!("not UTF-8: {e}"))
                        .map(|text| split_kept(text, self.fields.as_ref())),
                },
                Some(columns) => {
                    csv_record(text).and_then(|r| csv_instance(&r, columns)).map(|(v, kept)| (v.to_string(), kept))
                }
            };
            return Ok(Some((number, row)));
        }
    }
}

/// An instance's members, as written (a member given twice stays twice, for the decoder to
/// refuse).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A JSON Lines instance without the members the model does not take, and those members. An
/// instance with none (or not an object, or not JSON: the decoder says why) is left as it is.
fn split_kept(text: &str, fields: Option<&HashSet<String>>) -> (String, Kept) {
    let unchanged = || (text.to_owned(), Kept::new());
    let Some(fields) = fields else { return unchanged() };
    if !text.trim_start().starts_with('{') {
        return unchanged();
    }
    let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(text) else { return unchanged() };
    if members.iter().all(|(name, _)| fields.contains(name)) {
        return unchanged();
    }
    let mut instance = String::with_capacity(text.len());
    let mut kept = Kept::new();
    instance.push('{');
    for (name, value) in members {
        if fields.contains(&name) {
            if instance.len() > 1 {
                instance.push(',');
            }
            instance.push_str(&Value::String(name).to_string());
            instance.push(':');
            instance.push_str(value.get());
        } else {
            // Not nested (long lines with an array or object inside are refused before), so
            // its tree is about its text's size.
            kept.push((name, serde_json::from_str(value.get()).unwrap_or(Value::Null)));
        }
    }
    instance.push('}');
    (instance, kept)
}

/// What a row's kept columns hold, for the bound on text in flight.
fn kept_bytes(kept: &Kept) -> usize {
    kept.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                }
        })
        .sum()
}

/// One CSV record's cells.
fn csv_record(text: &[u8]) -> Result<csv::StringRecord, String> {
    let mut record = csv::StringRecord::new();
    match csv::ReaderBuilder::new().has_headers(false).from_reader(text).read_record(&mut record) {
        Ok(_) => Ok(record),
        Err(e) => Err(match e.kind() {
            csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8: {err}"),
            _ => format!("not CSV: {e}"),
        }),
    }
}

/// A cell as quoted in a message: its start, and its length when it is long.
fn clip(cell: &str) -> String {
    const SHOWN: usize = 64;
    match cell.char_indices().nth(SHOWN) {
        None => format!("{cell:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &cell[..end], cell.len()),
    }
}

/// Types a CSV row by the schema: numbers, integers and booleans are parsed, the rest stay
/// text; an empty cell is a missing field. Columns that are not fields are kept, as text.
fn csv_instance(
    record: &csv::StringRecord,
    columns: &[(String, Option<&'static str>)],
) -> Result<(Value, Kept), String> {
    if record.len() != columns.len() {
        return Err(format!("{} cells, the header has {}", record.len(), columns.len()));
    }
    let mut instance = Map::new();
    let mut kept = Kept::new();
    for ((name, kind), cell) in columns.iter().zip(record.iter()) {
        let Some(kind) = kind else {
            kept.push((name.clone(), Value::String(cell.to_owned())));
            continue;
        };
        if cell.is_empty() {
            continue;
        }
        let value = match *kind {
            "number" | "integer" => match serde_json::from_str::<serde_json::Number>(cell.trim()) {
                Ok(n) => Value::Number(n),
                Err(_) => return Err(format!("{name}: {} is not a number", clip(cell))),
            },
            "boolean" => match cell.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("{name}: {} is not true or false", clip(cell))),
            },
            _ => Value::String(cell.to_owned()),
        };
        instance.insert(name.clone(), value);
    }
    Ok((Value::Object(instance), kept))
}

fn kind_of(spec: &ModelSpec, field: &str) -> &'static str {
    match spec.schema.document()["properties"][field]["type"].as_str() {
        Some("number") => "number",
        Some("integer") => "integer",
        Some("boolean") => "boolean",
        _ => "string",
    }
}

fn reader(path: &Path) -> Result<Box<dyn Read>, String> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    std::fs::File::open(path)
        .map(|f| Box::new(f) as Box<dyn Read>)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub async fn score(args: &ScoreArgs) -> Result<Summary, String> {
    let config = Config::load(&args.serve).map_err(|e| e.to_string())?;
    let model = args.model.clone().unwrap_or_else(|| config.default_model().name.clone());
    let target = tokio::task::block_in_place(|| load_target(&config, &model, args.version.as_deref(), None))?;
    let summary = score_on(args, Runner::new(target.clone())).await;
    retire(&target);
    summary
}

async fn score_on(args: &ScoreArgs, mut runner: Runner) -> Result<Summary, String> {
    let spec = runner.spec().clone();
    let input: Box<dyn BufRead> = Box::new(BufReader::with_capacity(1 << 16, reader(&args.input)?));
    let name = if args.input == Path::new("-") { "stdin".into() } else { args.input.display().to_string() };
    let mut rows =
        Rows::new(input, format_of(&args.input, args.input_format), &spec).map_err(|e| format!("{name}: {e}"))?;
    let output: Box<dyn Write> = if args.output == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output).map_err(|e| format!("cannot write {}: {e}", args.output.display()))?,
        )
    };
    let mut writer = Writer::new(output, format_of(&args.output, args.output_format), &spec, rows.kept_names());
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} rows {per_sec} {elapsed}").expect("template"),
        );
        bar
    });

    let mut chunk = runner.chunk();
    let mut lines: VecDeque<(u64, Kept)> = Default::default();
    let mut outcome = Outcome::default();
    let bar = progress.as_ref();
    while let Some((line, instance)) = rows.next().map_err(|e| format!("{name}: {e}"))? {
        match instance {
            Ok((instance, kept)) => {
                let held = kept_bytes(&kept);
                lines.push_back((line, kept));
                chunk.add(instance, held);
            }
            Err(message) => outcome.refuse(line, &message),
        }
        if chunk.is_full() {
            let full = std::mem::replace(&mut chunk, runner.chunk());
            runner.push(full, &mut |s| emit(s, &mut lines, &mut writer, &mut outcome, bar)).await;
        }
    }
    if !chunk.is_empty() {
        runner.push(chunk, &mut |s| emit(s, &mut lines, &mut writer, &mut outcome, bar)).await;
    }
    let rows_per_second = runner.finish(&mut |s| emit(s, &mut lines, &mut writer, &mut outcome, bar)).await;
    writer.flush().map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = &outcome.write_error {
        return Err(format!("cannot write {}: {e}", args.output.display()));
    }
    Ok(Summary { scored: outcome.scored, refused: outcome.refused, rows_per_second })
}

fn emit(
    scored: Vec<Scored>,
    lines: &mut VecDeque<(u64, Kept)>,
    writer: &mut Writer<'_>,
    outcome: &mut Outcome,
    bar: Option<&indicatif::ProgressBar>,
) {
    for scored in scored {
        let (line, kept) = lines.pop_front().expect("one line per instance");
        outcome.take(line, &kept, scored, writer);
    }
    if let Some(bar) = bar {
        bar.set_position(outcome.scored + outcome.refused);
    }
}

#[derive(Default)]
struct Outcome {
    scored: u64,
    refused: u64,
    write_error: Option<std::io::Error>,
}

impl Outcome {
    fn refuse(&mut self, line: u64, message: &str) {
        self.refused += 1;
        if self.refused <= MAX_REPORTED {
            eprintln!("line {line}: {message}");
        } else if self.refused == MAX_REPORTED + 1 {
            eprintln!("more refused rows are counted, not listed");
        }
    }

    fn take(&mut self, line: u64, kept: &Kept, scored: Scored, writer: &mut Writer<'_>) {
        match scored {
            Scored::Outputs(outputs) => {
                self.scored += 1;
                if let Err(e) = writer.write(line, kept, &outputs) {
                    self.write_error.get_or_insert(e);
                }
            }
            Scored::Refused(errors) => {
                let text: Vec<String> = errors
                    .iter()
                    .map(|e| if e.path.is_empty() { e.message.clone() } else { format!("{}: {}", e.path, e.message) })
                    .collect();
                self.refuse(line, &text.join("; "));
            }
        }
    }
}

/// JSON Lines `{"line": N, "id": ..., "outputs": {...}}`, or CSV with a `line` column, the kept
/// columns and one column per output (arrays and objects as JSON text). A kept column named
/// `line`, `outputs` or like an output is written as `input.<name>`.
struct Writer<'a> {
    out: Out,
    outputs: Vec<&'a str>,
    /// CSV out: the kept columns, from a CSV's header, else from the first row written.
    kept: Option<Vec<String>>,
    header_written: bool,
}

enum Out {
    Jsonl(BufWriter<Box<dyn Write>>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

impl<'a> Writer<'a> {
    fn new(out: Box<dyn Write>, format: RowFormat, spec: &'a ModelSpec, kept: Option<Vec<String>>) -> Self {
        let outputs = spec.outputs.iter().map(|o| o.name.as_str()).collect();
        let out = match format {
            RowFormat::Jsonl => Out::Jsonl(BufWriter::with_capacity(1 << 16, out)),
            RowFormat::Csv => Out::Csv(Box::new(csv::Writer::from_writer(out))),
        };
        Self { out, outputs, kept, header_written: false }
    }

    /// The name a kept column is written under.
    fn kept_name<'n>(&self, name: &'n str) -> std::borrow::Cow<'n, str> {
        if name == "line" || name == "outputs" || self.outputs.contains(&name) {
            format!("input.{name}").into()
        } else {
            name.into()
        }
    }

    /// `outputs` is the JSON text of the row's outputs object.
    fn write(&mut self, line: u64, kept: &Kept, outputs: &str) -> std::io::Result<()> {
        let names: Vec<String> = kept.iter().map(|(name, _)| self.kept_name(name).into_owned()).collect();
        match &mut self.out {
            Out::Jsonl(out) => {
                write!(out, "{{\"line\":{line}")?;
                for (name, (_, value)) in names.iter().zip(kept) {
                    write!(out, ",{}:{}", Value::String(name.clone()), value)?;
                }
                writeln!(out, ",\"outputs\":{outputs}}}")
            }
            Out::Csv(out) => {
                let outputs: Map<String, Value> = serde_json::from_str(outputs).unwrap_or_default();
                let columns = self.kept.get_or_insert_with(|| kept.iter().map(|(name, _)| name.clone()).collect());
                if !self.header_written {
                    self.header_written = true;
                    let header: Vec<String> = columns
                        .iter()
                        .map(|c| {
                            if c == "line" || c == "outputs" || self.outputs.contains(&c.as_str()) {
                                format!("input.{c}")
                            } else {
                                c.clone()
                            }
                        })
                        .collect();
                    out.write_record(
                        std::iter::once("line")
                            .chain(header.iter().map(String::as_str))
                            .chain(self.outputs.iter().copied()),
                    )?;
                }
                let text = |value: Option<&Value>| match value {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let kept_cells = columns.iter().map(|c| text(kept.iter().find(|(name, _)| name == c).map(|(_, v)| v)));
                let cells = self.outputs.iter().map(|o| text(outputs.get(*o)));
                out.write_record(std::iter::once(line.to_string()).chain(kept_cells).chain(cells))?;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Out::Jsonl(out) => out.flush(),
            Out::Csv(out) => out.flush(),
        }
    }
}
