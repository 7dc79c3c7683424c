//! What every layer's errors share, without any wire format: how a client's value is quoted
//! back, and a problem with one field of a request.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// How many characters of a client's value an error message quotes back.
const QUOTE_CHARS: usize = 100;

/// A client's text as an error message quotes it: whole up to 100 characters, otherwise its
/// first 100, `…` and the total length, `aaaa… (1048576 chars)`. A client that sends a 1 MB
/// string must not get it back, nor fill the logs with it.
pub fn clip(text: &str) -> Cow<'_, str> {
    clip_chars(text, QUOTE_CHARS)
}

/// `text` whole up to `max` characters, otherwise its first `max`, `…` and the total length.
pub fn clip_chars(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} chars)", &text[..cut], text.chars().count())),
    }
}

/// A client's JSON value as an error message quotes it, cut like [`clip`]; a long string
/// keeps its quotes around the part shown: `"aaaa…" (1048576 chars)`.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => match s.char_indices().nth(QUOTE_CHARS) {
            None => value.to_string(),
            Some((cut, _)) => {
                let head = Value::from(&s[..cut]).to_string();
                format!("{}…\" ({} chars)", &head[..head.len() - 1], s.chars().count())
            }
        },
        other => clip(&other.to_string()).into_owned(),
    }
}

/// A parser's message, with the one client value it may quote (`"..."` or `` `...` ``) cut
/// like [`clip`]; serde quotes at most one, and names its expectation after it.
pub fn clip_quoted(message: &str) -> Cow<'_, str> {
    let span = match message.find(['"', '`']) {
        Some(open) if message[open..].starts_with('"') => message.rfind('"').map(|close| (open + 1, close)),
        Some(open) => message[open + 1..].find('`').map(|close| (open + 1, open + 1 + close)),
        None => None,
    };
    match span {
        Some((start, end)) if end > start && message[start..end].chars().nth(QUOTE_CHARS).is_some() => {
            Cow::Owned(format!("{}{}{}", &message[..start], clip(&message[start..end]), &message[end..]))
        }
        _ => Cow::Borrowed(message),
    }
}

/// A problem with one field of a request, as JSON Pointer path plus a readable message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer to the field, e.g. `/instances/3/bedrooms`.
    pub path: String,
    /// The rule broken and the value received, e.g. `must be <= 10, got 14`.
    pub message: String,
}

/// Most field errors one rejection lists: enough to fix a request, while a body full of bad
/// fields cannot make its answer (and the work of building it) many times its own size.
pub const MAX_FIELD_ERRORS: usize = 100;

/// Field errors found in a schema's `examples` (checked as instances, so their paths start
/// `/instances/N`) as one line of plain text: `examples[0].bedrooms: must be <= 10, got 14;
/// examples[0].prefarea: is required`, for start-up and `inferd check` messages.
pub fn examples_text(errors: &[FieldError]) -> String {
    let named = |error: &FieldError| {
        let path = error.path.strip_prefix("/instances/").unwrap_or(&error.path);
        let (index, field) = path.split_once('/').unwrap_or((path, ""));
        let field = field.replace('/', ".");
        match field.is_empty() {
            true => format!("examples[{index}]: {}", error.message),
            false => format!("examples[{index}].{field}: {}", error.message),
        }
    };
    errors.iter().map(named).collect::<Vec<_>>().join("; ")
}

pub fn validation_message(details: &[FieldError], truncated: bool) -> String {
    if truncated {
        format!("more than {MAX_FIELD_ERRORS} invalid fields in the request; the first {MAX_FIELD_ERRORS} are listed")
    } else {
        format!("{} invalid field(s) in the request", details.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_errors_read_as_plain_text() {
        let error = |path: &str, message: &str| FieldError { path: path.into(), message: message.into() };
        let errors =
            [error("/instances/0/bedrooms", "must be <= 10, got 14"), error("/instances/2", "must be an object")];
        assert_eq!(
            examples_text(&errors),
            "examples[0].bedrooms: must be <= 10, got 14; examples[2]: must be an object"
        );
    }

    #[test]
    fn quoted_values_are_cut_to_100_characters() {
        assert_eq!(clip("short"), "short");
        let long = "a".repeat(1 << 20);
        assert_eq!(clip(&long), format!("{}… (1048576 chars)", "a".repeat(100)));
        assert_eq!(clip(&"é".repeat(101)), format!("{}… (101 chars)", "é".repeat(100)), "cuts on characters");
        assert_eq!(clip(&"a".repeat(100)), "a".repeat(100));
        assert_eq!(shown(&Value::from(long.as_str())), format!("\"{}…\" (1048576 chars)", "a".repeat(100)));
        assert_eq!(shown(&Value::from("q\"")), r#""q\"""#);
        assert_eq!(shown(&serde_json::json!(14)), "14");
        let array = Value::from(vec![1; 1000]);
        assert!(shown(&array).ends_with("… (2001 chars)"), "{}", shown(&array));
        let message = format!("invalid type: string \"{long}\", expected a sequence at line 1 column 9");
        assert_eq!(
            clip_quoted(&message),
            format!(
                "invalid type: string \"{}… (1048576 chars)\", expected a sequence at line 1 column 9",
                "a".repeat(100)
            )
        );
        let message = format!("unknown field `{long}`, expected `instances`");
        assert!(clip_quoted(&message).ends_with("… (1048576 chars)`, expected `instances`"));
        assert_eq!(clip_quoted("expected `,` or `]` at line 1"), "expected `,` or `]` at line 1");
    }
}
