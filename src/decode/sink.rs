//! Where decoded values go: the rows being built, and every field error found on the way.

use serde_json::Value;

use super::DecodeError;
use crate::error::{clip, shown, FieldError, MAX_FIELD_ERRORS};
use crate::schema::InstancePlan;
use crate::schema::InstanceSchema;
use crate::tensor::columns::{Column, Scalar};
use crate::tensor::rows::Rows;
use crate::tensor::signature::{ElemType, FeedPlan};

/// One entry of the columnar form: its values (`None` when it was not an array), kept up to
/// one past the row limit, and how many it held.
pub struct ColumnEntry {
    pub name: String,
    pub values: Option<Vec<Scalar>>,
    pub len: usize,
}

pub struct Sink<'p> {
    plan: &'p InstancePlan,
    rows: Rows,
    /// Errors of the schema's rules. Errors of the element types (a value beyond an f16, say)
    /// are reported only when there are none, as they were when jsonschema ran first.
    schema_errors: Vec<FieldError>,
    type_errors: Vec<FieldError>,
    /// Fields given in the row being read.
    seen: Vec<bool>,
    /// Elements per row of each input.
    widths: Vec<usize>,
    max_rows: usize,
    /// Instances in the request, built or not.
    count: usize,
    /// The one `[N, F]` input's name, which the columnar form may key its rows by.
    matrix_input: Option<String>,
    /// Values the previews of this request's misplaced arrays and objects may still keep.
    preview: std::cell::Cell<usize>,
}

impl<'p> Sink<'p> {
    pub fn new(plan: &'p InstancePlan, feed: &FeedPlan, max_rows: usize, expected: usize) -> Self {
        Self {
            plan,
            rows: Rows::with_capacity(feed, expected.min(max_rows)),
            schema_errors: Vec::new(),
            type_errors: Vec::new(),
            seen: vec![false; plan.fields.len()],
            widths: feed.inputs.iter().map(|i| i.fields.len()).collect(),
            max_rows,
            count: 0,
            matrix_input: plan.matrix.then(|| feed.inputs[0].name.clone()),
            preview: std::cell::Cell::new(super::preview::REQUEST_PREVIEW_VALUES),
        }
    }

    pub fn plan(&self) -> &'p InstancePlan {
        self.plan
    }

    /// The request's budget of preview values (see `decode::preview`).
    pub fn preview(&self) -> &std::cell::Cell<usize> {
        &self.preview
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    fn full(&self) -> bool {
        self.schema_errors.len() + self.type_errors.len() > MAX_FIELD_ERRORS
    }

    fn path(row: usize, field: &str) -> String {
        format!("/instances/{row}/{}", clip(&escape(field)))
    }

    /// Starts a row: placeholders in every column, filled as the fields arrive. `None` once
    /// the request has more rows than allowed (they are only counted).
    pub fn begin_row(&mut self) -> Option<usize> {
        if self.count >= self.max_rows {
            return None;
        }
        let row = self.count;
        self.count += 1;
        for (column, width) in self.rows.columns.iter_mut().zip(&self.widths) {
            column.grow(*width);
        }
        self.rows.len += 1;
        self.seen.iter_mut().for_each(|s| *s = false);
        Some(row)
    }

    /// The array ended where a row was begun.
    pub fn abandon_row(&mut self) {
        self.count -= 1;
        self.rows.len -= 1;
        let len = self.rows.len;
        for (column, width) in self.rows.columns.iter_mut().zip(&self.widths) {
            column.truncate(len * width);
        }
    }

    /// Begins `n` rows at once, for tensors that fill them a column at a time (the caller has
    /// held `n` to the limit).
    pub fn grow_rows(&mut self, n: usize) {
        self.count += n;
        self.rows.len += n;
        for (column, width) in self.rows.columns.iter_mut().zip(&self.widths) {
            column.grow(n * width);
        }
    }

    /// One element of a tensor: checked and set, without the per-row bookkeeping of objects.
    pub fn element(&mut self, row: usize, field: usize, value: Scalar) {
        self.check_and_set(row, field, value);
    }

    /// A whole input's elements, already of its type (binary tensor data): checked against the
    /// schema only where its fields have rules.
    pub fn put_column(&mut self, input: usize, column: Column) {
        let fields = &self.plan.inputs[input];
        let width = self.widths[input];
        // JSON has no NaN or infinity, so neither may binary data.
        if matches!(column.elem(), ElemType::F16 | ElemType::F32 | ElemType::F64) {
            let mut non_finite = false;
            for k in 0..column.len() {
                if let Scalar::F64(v) = column.scalar_at(k) {
                    if !v.is_finite() && !self.full() {
                        non_finite = true;
                        let field = &self.plan.fields[fields[k % width]];
                        let message = format!("must be a finite number, got {v}");
                        self.schema_errors.push(FieldError { path: Self::path(k / width, &field.name), message });
                    }
                }
            }
            if non_finite {
                self.rows.columns[input] = column;
                return;
            }
        }
        if fields.iter().any(|f| self.plan.fields[*f].has_checks()) {
            for k in 0..column.len() {
                let field = &self.plan.fields[fields[k % width]];
                if self.full() {
                    break;
                }
                field.check(&column.scalar_at(k), || Self::path(k / width, &field.name), &mut self.schema_errors);
            }
        }
        self.rows.columns[input] = column;
    }

    pub fn count_extra(&mut self) {
        self.count += 1;
    }

    pub fn field(&mut self, row: usize, field: usize, value: Scalar) {
        let plan = &self.plan.fields[field];
        if std::mem::replace(&mut self.seen[field], true) {
            self.schema_errors
                .push(FieldError { path: Self::path(row, &plan.name), message: "is given more than once".into() });
            return;
        }
        self.check_and_set(row, field, value);
    }

    /// Checks a value against its field's rules and stores it; its element type's error is
    /// kept only when the rules found nothing (one error per value, not two).
    fn check_and_set(&mut self, row: usize, field: usize, value: Scalar) {
        let plan = &self.plan.fields[field];
        let before = self.schema_errors.len();
        if !self.full() {
            plan.check(&value, || Self::path(row, &plan.name), &mut self.schema_errors);
        }
        let at = row * self.widths[plan.input] + plan.offset;
        if let Err(message) = self.rows.columns[plan.input].set(at, value) {
            if !self.full() && self.schema_errors.len() == before {
                self.type_errors.push(FieldError { path: Self::path(row, &plan.name), message });
            }
        }
    }

    pub fn unknown_field(&mut self, row: usize, name: &str) {
        if !self.plan.open && !self.full() {
            self.schema_errors
                .push(FieldError { path: Self::path(row, name), message: "is not a field of this model".into() });
        }
    }

    /// Fields not given: required ones are reported as such; an optional one still has to
    /// fill its tensor element, so it is reported as the null it stands for.
    pub fn end_row(&mut self, row: usize) {
        for (field, seen) in self.plan.fields.iter().zip(&self.seen) {
            if *seen || self.full() {
                continue;
            }
            let path = Self::path(row, &field.name);
            if field.required {
                self.schema_errors.push(FieldError { path, message: "is required".into() });
            } else {
                let mut probe = Column::with_capacity(field.elem, 1);
                let message = probe.push(&Scalar::Null).err().unwrap_or_else(|| "is missing".into());
                self.type_errors.push(FieldError { path, message });
            }
        }
        // Nothing else is reported for a row that was not an instance at all.
        self.seen.iter_mut().for_each(|s| *s = true);
    }

    pub fn not_an_instance(&mut self, row: usize, value: Scalar) {
        let expected = if self.plan.matrix {
            format!("an object or an array of {} values", self.plan.fields.len())
        } else {
            "an object".to_owned()
        };
        let got = value.to_value();
        let got = if got.is_null() { "null".to_owned() } else { format!("{} {}", value.type_name(), shown(&got)) };
        self.schema_errors
            .push(FieldError { path: format!("/instances/{row}"), message: format!("must be {expected}, got {got}") });
        self.seen.iter_mut().for_each(|s| *s = true);
    }

    pub fn wrong_row_length(&mut self, row: usize, n: usize) {
        self.schema_errors.push(FieldError {
            path: format!("/instances/{row}"),
            // Values past one too many are skipped unread, so a longer row says "more".
            message: match self.plan.fields.len() {
                width if n > width => format!("a plain row must hold {width} values, got more"),
                width => format!("a plain row must hold {width} values, got {n}"),
            },
        });
        self.seen.iter_mut().for_each(|s| *s = true);
    }

    /// An error of the columnar form's `inputs` as a whole, or of one of its entries.
    pub fn columnar_error(&mut self, name: Option<&str>, message: String) {
        let path = match name {
            Some(name) => format!("/inputs/{}", clip(&escape(name))),
            None => "/inputs".to_owned(),
        };
        self.schema_errors.push(FieldError { path, message });
    }

    /// TensorFlow Serving's columnar form, `{"inputs": {"<name>": [one value per row], ...}}`,
    /// keyed by field, or by the one `[N, F]` input with one row of F values per instance.
    /// Each list holds at most `max_rows + 1` values (the rest only counted, in `len`).
    pub fn columns(&mut self, entries: Vec<ColumnEntry>) {
        let plan = self.plan;
        // A name given twice is refused, not settled by whichever copy comes last.
        let mut twice = false;
        for (i, entry) in entries.iter().enumerate() {
            if entries[..i].iter().any(|e| e.name == entry.name) {
                self.columnar_error(Some(&entry.name), "is given more than once".into());
                twice = true;
            }
        }
        if twice {
            return;
        }
        if entries.len() == 1 && self.matrix_input.as_deref() == Some(entries[0].name.as_str()) {
            let entry = entries.into_iter().next().expect("one entry");
            return match entry.values {
                Some(rows) => self.rows_of(rows, entry.len),
                None => self.columnar_error(Some(&entry.name), "must be an array of rows".into()),
            };
        }
        let errors = self.schema_errors.len();
        let mut rows = None;
        let mut lists = Vec::with_capacity(entries.len());
        for entry in &entries {
            let name = entry.name.as_str();
            let Some(field) = plan.find(name, 0) else {
                if !plan.open {
                    self.columnar_error(Some(name), "is not an input of this model".into());
                }
                continue;
            };
            let Some(values) = &entry.values else {
                self.columnar_error(Some(name), "must be an array with one value per instance".into());
                continue;
            };
            if *rows.get_or_insert(entry.len) != entry.len {
                let message = format!("has {} values, other inputs have {}", entry.len, rows.unwrap_or(0));
                self.columnar_error(Some(name), message);
                continue;
            }
            lists.push((field, values));
        }
        // A malformed column leaves nothing to predict; only its own errors are reported.
        if self.schema_errors.len() > errors {
            return;
        }
        let total = rows.unwrap_or(0);
        if total > self.max_rows {
            // Only counted: the lists hold no more than one past the limit.
            self.count = total;
            return;
        }
        for r in 0..total {
            let Some(row) = self.begin_row() else {
                self.count_extra();
                continue;
            };
            for (field, values) in &lists {
                self.field(row, *field, values[r].clone());
            }
            self.end_row(row);
        }
    }

    /// `{"inputs": [[F values], ...]}`, or the one input's rows: plain rows, as in `instances`.
    fn rows_of(&mut self, rows: Vec<Scalar>, len: usize) {
        let kept = rows.len();
        for value in rows {
            let Some(row) = self.begin_row() else {
                self.count_extra();
                continue;
            };
            match value {
                Scalar::Other(Value::Array(items)) => {
                    let n = items.len();
                    for (field, item) in items.into_iter().enumerate().take(self.plan.fields.len()) {
                        self.field(row, field, Scalar::from_owned(item));
                    }
                    if n != self.plan.fields.len() {
                        self.wrong_row_length(row, n);
                    }
                }
                other => self.not_an_instance(row, other),
            }
            self.end_row(row);
        }
        // Rows past the limit were counted, not kept.
        self.count += len - kept;
    }

    /// The rows, or the request's errors: its count out of bounds, then its fields. jsonschema
    /// checks the rows afterwards when the schema has keywords the plan does not carry out.
    pub fn finish(self, schema: &InstanceSchema) -> Result<Rows, DecodeError> {
        // Errors of what was sent say more than "no instances" when nothing could be built.
        if self.count == 0 && !self.schema_errors.is_empty() {
            return Err(DecodeError::validation(self.schema_errors));
        }
        if self.count == 0 || self.count > self.max_rows {
            let message = format!("must hold 1 to {} instances, got {}", self.max_rows, self.count);
            return Err(DecodeError::Invalid {
                message: format!("`instances` {message}"),
                details: vec![FieldError { path: "/instances".into(), message }],
            });
        }
        if !self.schema_errors.is_empty() {
            return Err(DecodeError::validation(self.schema_errors));
        }
        if !self.type_errors.is_empty() {
            return Err(DecodeError::validation(self.type_errors));
        }
        if !self.plan.fallback.is_empty() {
            let mut errors = Vec::new();
            for row in 0..self.rows.len {
                schema.check(row, &instance(self.plan, &self.rows, row), &mut errors);
                if errors.len() > MAX_FIELD_ERRORS {
                    break;
                }
            }
            if !errors.is_empty() {
                return Err(DecodeError::validation(errors));
            }
        }
        Ok(self.rows)
    }
}

/// Row `row` rebuilt as the JSON instance it was decoded from.
pub fn instance(plan: &InstancePlan, rows: &Rows, row: usize) -> Value {
    let map = plan
        .fields
        .iter()
        .map(|f| {
            let width = rows.width(f.input);
            (f.name.clone(), rows.columns[f.input].value_at(row * width + f.offset))
        })
        .collect();
    Value::Object(map)
}

/// JSON Pointer escaping (RFC 6901) of one path segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
