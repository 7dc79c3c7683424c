//! Typed columns of tensor elements, and how one client value becomes an element.
//!
//! A value arrives as a [`Scalar`] (from the streaming decoder, a JSON tree, or binary tensor
//! data) and is converted into the column's element type with a message that says what was
//! expected when it does not fit. Columns are the buffers handed to ONNX Runtime and read back
//! from it, and they serialise their elements directly (f32 as the shortest text that reads
//! back as the same f32).

use serde::Serializer;
use serde_json::Value;

use super::signature::ElemType;
use crate::error::shown;

/// One value a client sent for one element, before its element type is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    /// An array or object where one value was expected: kept whole for the message only.
    Other(Value),
}

impl Scalar {
    /// A value as the columns take it; a string is moved, not copied.
    pub fn from_owned(value: Value) -> Self {
        match value {
            Value::String(s) => Self::Str(s),
            other => Self::from_value(&other),
        }
    }

    pub fn from_value(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Self::U64(u),
                (_, Some(i)) => Self::I64(i),
                _ => Self::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Self::Str(s.clone()),
            other => Self::Other(other.clone()),
        }
    }

    /// The value as JSON, for messages and the jsonschema fallback.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::from(*b),
            Self::U64(u) => Value::from(*u),
            Self::I64(i) => Value::from(*i),
            Self::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::from(s.as_str()),
            Self::Other(v) => v.clone(),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::U64(u) => Some(*u as f64),
            Self::I64(i) => Some(*i as f64),
            Self::F64(f) => Some(*f),
            _ => None,
        }
    }

    /// JSON Schema's type name of the value: 3.0 is an integer, as the specification says.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "boolean",
            Self::U64(_) | Self::I64(_) => "integer",
            Self::F64(f) if f.fract() == 0.0 => "integer",
            Self::F64(_) => "number",
            Self::Str(_) => "string",
            Self::Other(Value::Array(_)) => "array",
            Self::Other(_) => "object",
        }
    }

    fn shown(&self) -> String {
        shown(&self.to_value())
    }
}

/// An integer read from a client, before its type's range is checked.
enum Integral {
    Exact(i128),
    /// Integral, but beyond any integer type (`1e300`): shown as the client wrote it.
    Huge,
}

/// JSON Schema counts 3.0 as an integer, so it is accepted as 3. serde_json reads an integer
/// beyond i64 and u64 (2^64, say) as a float: it is integral too, and refused for its range
/// by the caller rather than called "not an integer".
fn integer(value: &Scalar) -> Result<Integral, String> {
    match value {
        Scalar::I64(i) => Ok(Integral::Exact((*i).into())),
        Scalar::U64(u) => Ok(Integral::Exact((*u).into())),
        // Every integral f64 below 1e38 converts to i128 exactly.
        Scalar::F64(f) if f.fract() == 0.0 && f.abs() < 1e38 => Ok(Integral::Exact(*f as i128)),
        Scalar::F64(f) if f.fract() == 0.0 => Ok(Integral::Huge),
        other => Err(format!("must be an integer, got {}", other.shown())),
    }
}

/// A finite number no larger in magnitude than `max`, the largest finite value of the element
/// type as it is printed (`65504`, `3.4028235e38`): beyond it the conversion would give infinity.
fn number(value: &Scalar, max: f64, max_shown: &str) -> Result<f64, String> {
    let v = value.as_f64().ok_or_else(|| format!("must be a number, got {}", value.shown()))?;
    if v.is_finite() && v.abs() <= max {
        Ok(v)
    } else {
        Err(format!("must be a number between -{max_shown} and {max_shown}, got {}", value.shown()))
    }
}

/// One element type: built from a client's value, written to JSON and to binary tensor data.
trait Element: Sized + Default + Clone {
    fn from_scalar(value: &Scalar) -> Result<Self, String>;
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    fn to_value(&self) -> Value;
}

macro_rules! integer_elements {
    ($($ty:ty => $ser:ident),*) => {$(
        impl Element for $ty {
            fn from_scalar(value: &Scalar) -> Result<Self, String> {
                let out_of_range = |got: &dyn std::fmt::Display| {
                    format!("must be an integer between {} and {}, got {got}", <$ty>::MIN, <$ty>::MAX)
                };
                match integer(value)? {
                    Integral::Exact(i) => <$ty>::try_from(i).map_err(|_| out_of_range(&i)),
                    Integral::Huge => Err(out_of_range(&value.shown())),
                }
            }
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.$ser(*self)
            }
            fn to_value(&self) -> Value {
                Value::from(*self)
            }
        }
    )*};
}
integer_elements!(i8 => serialize_i8, i16 => serialize_i16, i32 => serialize_i32, i64 => serialize_i64,
    u8 => serialize_u8, u16 => serialize_u16, u32 => serialize_u32, u64 => serialize_u64);

fn float_value(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

impl Element for f64 {
    fn from_scalar(value: &Scalar) -> Result<Self, String> {
        number(value, f64::MAX, "1.7976931348623157e308")
    }
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_json writes a NaN or an infinity as null: JSON has neither.
        s.serialize_f64(*self)
    }
    fn to_value(&self) -> Value {
        float_value(*self)
    }
}

impl Element for f32 {
    fn from_scalar(value: &Scalar) -> Result<Self, String> {
        // 3.4028235e38 is how f32::MAX prints; it lies a little above f32::MAX as an f64 and
        // still rounds to f32::MAX, so it is the bound rather than `f64::from(f32::MAX)`.
        number(value, 3.4028235e38, "3.4028235e38").map(|v| v as f32)
    }
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Shortest text that reads back as this f32 (`0.3`), not the f64 widening
        // (`0.30000001192092896`).
        s.serialize_f32(*self)
    }
    fn to_value(&self) -> Value {
        // Through the shortest text, so that a rebuilt instance shows what the client wrote.
        float_value(format!("{self}").parse().unwrap_or(f64::NAN))
    }
}

impl Element for half::f16 {
    fn from_scalar(value: &Scalar) -> Result<Self, String> {
        number(value, 65504.0, "65504").map(half::f16::from_f64)
    }
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f32(self.to_f32())
    }
    fn to_value(&self) -> Value {
        self.to_f32().to_value()
    }
}

impl Element for bool {
    fn from_scalar(value: &Scalar) -> Result<Self, String> {
        match value {
            Scalar::Bool(b) => Ok(*b),
            other => Err(format!("must be a boolean, got {}", other.shown())),
        }
    }
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*self)
    }
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
}

impl Element for String {
    fn from_scalar(value: &Scalar) -> Result<Self, String> {
        match value {
            Scalar::Str(s) => Ok(s.clone()),
            other => Err(format!("must be a string, got {}", other.shown())),
        }
    }
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
    fn to_value(&self) -> Value {
        Value::from(self.as_str())
    }
}

/// Element types whose binary tensor data is their little-endian bytes.
trait Fixed: Sized {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, out: &mut Vec<u8>);
}

macro_rules! fixed {
    ($($ty:ty),*) => {$(
        impl Fixed for $ty {
            const SIZE: usize = std::mem::size_of::<$ty>();
            fn read(bytes: &[u8]) -> Self {
                <$ty>::from_le_bytes(bytes.try_into().expect("chunk of the element's size"))
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
fixed!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64, half::f16);

impl Fixed for bool {
    const SIZE: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

macro_rules! columns {
    ($($variant:ident: $ty:ty),* $(,)?) => {
        /// One tensor's elements for a run of rows, row-major.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Column {
            $($variant(Vec<$ty>),)*
            String(Vec<String>),
        }

        impl Column {
            pub fn with_capacity(elem: ElemType, capacity: usize) -> Self {
                match elem {
                    $(ElemType::$variant => Self::$variant(Vec::with_capacity(capacity)),)*
                    ElemType::String => Self::String(Vec::with_capacity(capacity)),
                }
            }

            pub fn elem(&self) -> ElemType {
                match self {
                    $(Self::$variant(_) => ElemType::$variant,)*
                    Self::String(_) => ElemType::String,
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(Self::$variant(c) => c.len(),)*
                    Self::String(c) => c.len(),
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Appends one value; the error says what was expected.
            pub fn push(&mut self, value: &Scalar) -> Result<(), String> {
                match self {
                    $(Self::$variant(c) => c.push(<$ty>::from_scalar(value)?),)*
                    Self::String(c) => c.push(String::from_scalar(value)?),
                }
                Ok(())
            }

            /// Appends `n` placeholder elements, to be [`Column::set`] in any order.
            pub fn grow(&mut self, n: usize) {
                match self {
                    $(Self::$variant(c) => c.resize(c.len() + n, Default::default()),)*
                    Self::String(c) => c.resize(c.len() + n, String::new()),
                }
            }

            /// Sets element `at`; a string is moved in rather than copied.
            pub fn set(&mut self, at: usize, value: Scalar) -> Result<(), String> {
                match (self, value) {
                    (Self::String(c), Scalar::Str(s)) => c[at] = s,
                    $((Self::$variant(c), value) => c[at] = <$ty>::from_scalar(&value)?,)*
                    (Self::String(_), other) => return Err(format!("must be a string, got {}", other.shown())),
                }
                Ok(())
            }

            /// Drops every element from `len` on.
            pub fn truncate(&mut self, len: usize) {
                match self {
                    $(Self::$variant(c) => c.truncate(len),)*
                    Self::String(c) => c.truncate(len),
                }
            }

            pub fn append(&mut self, other: &mut Column) {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => a.append(b),)*
                    (Self::String(a), Self::String(b)) => a.append(b),
                    _ => unreachable!("columns of one tensor share an element type"),
                }
            }

            /// Appends a copy of `other`'s elements in `range`.
            pub fn extend_from(&mut self, other: &Column, range: std::ops::Range<usize>) {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => a.extend_from_slice(&b[range]),)*
                    (Self::String(a), Self::String(b)) => a.extend_from_slice(&b[range]),
                    _ => unreachable!("columns of one tensor share an element type"),
                }
            }

            pub fn split_off(&mut self, at: usize) -> Column {
                match self {
                    $(Self::$variant(c) => Self::$variant(c.split_off(at)),)*
                    Self::String(c) => Self::String(c.split_off(at)),
                }
            }

            /// Writes element `i` with `s`.
            pub fn serialize_at<S: Serializer>(&self, i: usize, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Self::$variant(c) => c[i].serialize(s),)*
                    Self::String(c) => c[i].serialize(s),
                }
            }

            /// Element `i` as JSON, for the jsonschema fallback and tests.
            pub fn value_at(&self, i: usize) -> Value {
                match self {
                    $(Self::$variant(c) => c[i].to_value(),)*
                    Self::String(c) => c[i].to_value(),
                }
            }

            /// Binary tensor data (Open Inference Protocol): little-endian elements, or for
            /// strings (BYTES) each as a 4-byte little-endian length and its bytes.
            pub fn write_binary(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
                match self {
                    $(Self::$variant(c) => c[range].iter().for_each(|v| v.write(out)),)*
                    Self::String(c) => c[range].iter().for_each(|v| {
                        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        out.extend_from_slice(v.as_bytes());
                    }),
                }
            }

            /// Reads binary tensor data of `count` elements, appending them.
            pub fn read_binary(&mut self, bytes: &[u8], count: usize) -> Result<(), String> {
                match self {
                    $(Self::$variant(c) => {
                        let size = <$ty as Fixed>::SIZE;
                        if bytes.len() != count.saturating_mul(size) {
                            return Err(format!("{count} elements need {} bytes of binary data, got {}", count.saturating_mul(size), bytes.len()));
                        }
                        c.extend(bytes.chunks_exact(size).map(<$ty as Fixed>::read));
                    })*
                    Self::String(c) => read_strings(bytes, count, c)?,
                }
                Ok(())
            }
        }
    };
}

columns!(
    F16: half::f16, F32: f32, F64: f64,
    I8: i8, I16: i16, I32: i32, I64: i64,
    U8: u8, U16: u16, U32: u32, U64: u64,
    Bool: bool,
);

impl Column {
    /// Element `i` as the value a client would have sent, for checking binary tensor data
    /// against the schema (a float exactly, widened to f64).
    pub fn scalar_at(&self, i: usize) -> Scalar {
        match self {
            Self::F16(c) => Scalar::F64(c[i].to_f64()),
            Self::F32(c) => Scalar::F64(f64::from(c[i])),
            Self::F64(c) => Scalar::F64(c[i]),
            Self::I8(c) => Scalar::I64(c[i].into()),
            Self::I16(c) => Scalar::I64(c[i].into()),
            Self::I32(c) => Scalar::I64(c[i].into()),
            Self::I64(c) => Scalar::I64(c[i]),
            Self::U8(c) => Scalar::U64(c[i].into()),
            Self::U16(c) => Scalar::U64(c[i].into()),
            Self::U32(c) => Scalar::U64(c[i].into()),
            Self::U64(c) => Scalar::U64(c[i]),
            Self::Bool(c) => Scalar::Bool(c[i]),
            Self::String(c) => Scalar::Str(c[i].clone()),
        }
    }
}

fn read_strings(mut bytes: &[u8], count: usize, out: &mut Vec<String>) -> Result<(), String> {
    for i in 0..count {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!("binary data ends before element {i} of {count}"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!("element {i} declares {len} bytes, {} are left", rest.len()));
        }
        let text = std::str::from_utf8(&rest[..len]).map_err(|e| format!("element {i} is not UTF-8: {e}"))?;
        out.push(text.to_owned());
        bytes = &rest[len..];
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes of binary data are left after {count} elements", bytes.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(elem: ElemType, value: Value) -> Result<Column, String> {
        let mut column = Column::with_capacity(elem, 1);
        column.push(&Scalar::from_value(&value)).map(|()| column)
    }

    #[test]
    fn small_and_unsigned_integers_are_range_checked() {
        assert!(push(ElemType::U8, json!(255)).is_ok());
        assert_eq!(push(ElemType::U8, json!(256)).unwrap_err(), "must be an integer between 0 and 255, got 256");
        assert_eq!(push(ElemType::U8, json!(-1)).unwrap_err(), "must be an integer between 0 and 255, got -1");
        assert_eq!(push(ElemType::U64, json!(u64::MAX)).unwrap(), Column::U64(vec![u64::MAX]));
        assert_eq!(push(ElemType::F16, json!(1.5)).unwrap(), Column::F16(vec![half::f16::from_f32(1.5)]));
        assert_eq!(push(ElemType::I64, json!(3.0)).unwrap(), Column::I64(vec![3]));
        assert_eq!(push(ElemType::I64, json!(3.5)).unwrap_err(), "must be an integer, got 3.5");
    }

    #[test]
    fn integers_beyond_u64_are_refused_for_their_range() {
        let two_to_64: Value = serde_json::from_str("18446744073709551616").unwrap();
        assert!(two_to_64.is_f64(), "serde_json reads 2^64 as a float");
        assert_eq!(
            push(ElemType::U64, two_to_64).unwrap_err(),
            "must be an integer between 0 and 18446744073709551615, got 18446744073709551616"
        );
        assert_eq!(
            push(ElemType::I64, json!(1e300)).unwrap_err(),
            "must be an integer between -9223372036854775808 and 9223372036854775807, got 1e+300"
        );
        assert!(push(ElemType::I64, json!(1e15)).is_ok());
        assert_eq!(push(ElemType::I64, Value::Null).unwrap_err(), "must be an integer, got null");
    }

    #[test]
    fn floats_that_would_overflow_their_type_are_refused() {
        assert!(push(ElemType::F16, json!(65504)).is_ok());
        assert_eq!(
            push(ElemType::F16, json!(1e6)).unwrap_err(),
            "must be a number between -65504 and 65504, got 1000000.0"
        );
        assert_eq!(push(ElemType::F32, json!(3.4028235e38)).unwrap(), Column::F32(vec![f32::MAX]));
        assert_eq!(
            push(ElemType::F32, json!(-1e300)).unwrap_err(),
            "must be a number between -3.4028235e38 and 3.4028235e38, got -1e+300"
        );
        assert_eq!(push(ElemType::F64, Value::Null).unwrap_err(), "must be a number, got null");
        let err = push(ElemType::F32, json!("x".repeat(1 << 20))).unwrap_err();
        assert_eq!(err, format!("must be a number, got \"{}…\" (1048576 chars)", "x".repeat(100)));
    }

    #[test]
    fn f32_prints_shortest_and_non_finite_as_null() {
        let column = Column::F32(vec![0.3, 1.0000001, f32::NAN, 1e-7]);
        let mut out = Vec::new();
        for i in 0..4 {
            column.serialize_at(i, &mut serde_json::Serializer::new(&mut out)).unwrap();
            out.push(b' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "0.3 1.0000001 null 1e-7 ");
        assert_eq!(column.value_at(0), json!(0.3));
    }

    #[test]
    fn binary_data_round_trips() {
        let column = Column::F32(vec![1.5, -2.0]);
        let mut bytes = Vec::new();
        column.write_binary(0..2, &mut bytes);
        let mut back = Column::with_capacity(ElemType::F32, 2);
        back.read_binary(&bytes, 2).unwrap();
        assert_eq!(back, column);
        assert!(back.read_binary(&bytes[..7], 2).unwrap_err().contains("need 8 bytes"));
        let strings = Column::String(vec!["yes".into(), "".into()]);
        let mut bytes = Vec::new();
        strings.write_binary(0..2, &mut bytes);
        let mut back = Column::with_capacity(ElemType::String, 2);
        back.read_binary(&bytes, 2).unwrap();
        assert_eq!(back, strings);
        assert!(Column::with_capacity(ElemType::String, 1).read_binary(&bytes, 1).unwrap_err().contains("left after"));
    }

    #[test]
    fn set_fills_placeholders_in_any_order() {
        let mut column = Column::with_capacity(ElemType::String, 2);
        column.grow(2);
        column.set(1, Scalar::Str("b".into())).unwrap();
        column.set(0, Scalar::Str("a".into())).unwrap();
        assert_eq!(column, Column::String(vec!["a".into(), "b".into()]));
        assert_eq!(column.set(0, Scalar::U64(1)).unwrap_err(), "must be a string, got 1");
    }
}
