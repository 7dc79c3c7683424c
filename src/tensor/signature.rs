//! What a model takes and gives, as ONNX declares it, and how instance fields map onto it.

use ort::value::{TensorElementType, ValueType};
use serde::Serialize;

/// Element types inferd can feed from JSON and read back into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    String,
}

/// The ONNX name (`float32`, `int64`, `bool`, `string`), for messages people read.
impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F16 => "float16",
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::Bool => "bool",
            Self::String => "string",
        })
    }
}

impl ElemType {
    pub fn from_ort(ty: TensorElementType) -> Option<Self> {
        Some(match ty {
            TensorElementType::Float16 => Self::F16,
            TensorElementType::Float32 => Self::F32,
            TensorElementType::Float64 => Self::F64,
            TensorElementType::Int8 => Self::I8,
            TensorElementType::Int16 => Self::I16,
            TensorElementType::Int32 => Self::I32,
            TensorElementType::Int64 => Self::I64,
            TensorElementType::Uint8 => Self::U8,
            TensorElementType::Uint16 => Self::U16,
            TensorElementType::Uint32 => Self::U32,
            TensorElementType::Uint64 => Self::U64,
            TensorElementType::Bool => Self::Bool,
            TensorElementType::String => Self::String,
            _ => return None,
        })
    }

    /// The JSON Schema `type` whose values this element type can be built from.
    pub fn json_type(self) -> &'static str {
        match self {
            Self::F16 | Self::F32 | Self::F64 => "number",
            Self::Bool => "boolean",
            Self::String => "string",
            _ => "integer",
        }
    }

    /// The Open Inference Protocol's name for this element type.
    pub fn oip_datatype(self) -> &'static str {
        match self {
            Self::F16 => "FP16",
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::I8 => "INT8",
            Self::I16 => "INT16",
            Self::I32 => "INT32",
            Self::I64 => "INT64",
            Self::U8 => "UINT8",
            Self::U16 => "UINT16",
            Self::U32 => "UINT32",
            Self::U64 => "UINT64",
            Self::Bool => "BOOL",
            Self::String => "BYTES",
        }
    }
}

/// One tensor input or output: name, element type, shape with -1 for dynamic dimensions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TensorInfo {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Signature {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(pub String);

impl Signature {
    pub fn from_outlets<'a>(
        inputs: impl IntoIterator<Item = (&'a str, &'a ValueType)>,
        outputs: impl IntoIterator<Item = (&'a str, &'a ValueType)>,
    ) -> Result<Self, SignatureError> {
        let convert = |role: &str, (name, ty): (&str, &ValueType)| -> Result<TensorInfo, SignatureError> {
            let (Some(elem_ty), Some(shape)) = (ty.tensor_type(), ty.tensor_shape()) else {
                return Err(SignatureError(format!(
                    "{role} '{name}' is not a tensor ({ty}); export classifiers without ZipMap \
                     (skl2onnx: options={{'zipmap': False}})"
                )));
            };
            let elem = ElemType::from_ort(elem_ty)
                .ok_or_else(|| SignatureError(format!("{role} '{name}' has unsupported element type {elem_ty}")))?;
            Ok(TensorInfo { name: name.to_owned(), elem, shape: shape.to_vec() })
        };
        Ok(Self {
            inputs: inputs.into_iter().map(|io| convert("input", io)).collect::<Result<_, _>>()?,
            outputs: outputs.into_iter().map(|io| convert("output", io)).collect::<Result<_, _>>()?,
        })
    }

    /// A model whose one input is `[N, F]` with F > 1 known takes each instance as a row of F columns.
    pub fn matrix_width(&self) -> Option<usize> {
        match self.inputs.as_slice() {
            [only] if only.shape.len() == 2 && only.shape[1] > 1 => Some(only.shape[1] as usize),
            _ => None,
        }
    }
}

/// How one ONNX input is filled from instance fields.
#[derive(Debug, Clone)]
pub struct InputPlan {
    pub name: String,
    pub elem: ElemType,
    /// Instance fields, in column order: one for a feature input, F for a matrix input.
    pub fields: Vec<String>,
    /// Rank of the tensor fed: 1 for `[N]`, 2 for `[N, 1]` or `[N, F]`.
    pub rank: usize,
}

/// The mapping from instance fields to ONNX inputs, checked once at load time.
#[derive(Debug, Clone)]
pub struct FeedPlan {
    pub inputs: Vec<InputPlan>,
}

impl FeedPlan {
    /// `fields` are the instance schema's properties in order, with their JSON types.
    pub fn new(signature: &Signature, fields: &[(String, String)]) -> Result<Self, SignatureError> {
        if let Some(width) = signature.matrix_width() {
            let input = &signature.inputs[0];
            if fields.len() != width {
                return Err(SignatureError(format!(
                    "input '{}' has {width} columns but the schema names {} properties",
                    input.name,
                    fields.len()
                )));
            }
            for (field, ty) in fields {
                check_type(field, ty, input.elem)?;
            }
            let fields = fields.iter().map(|(f, _)| f.clone()).collect();
            return Ok(Self {
                inputs: vec![InputPlan { name: input.name.clone(), elem: input.elem, fields, rank: 2 }],
            });
        }
        let mut inputs = Vec::with_capacity(signature.inputs.len());
        for input in &signature.inputs {
            let rank = match input.shape.as_slice() {
                [_] => 1,
                [_, 1] => 2,
                other => {
                    return Err(SignatureError(format!(
                        "input '{}' has shape {other:?}; inferd feeds [N], [N, 1], or one [N, F] input",
                        input.name
                    )))
                }
            };
            let (_, ty) = fields.iter().find(|(f, _)| *f == input.name).ok_or_else(|| {
                SignatureError(format!("the schema has no property for model input '{}'", input.name))
            })?;
            check_type(&input.name, ty, input.elem)?;
            inputs.push(InputPlan {
                name: input.name.clone(),
                elem: input.elem,
                fields: vec![input.name.clone()],
                rank,
            });
        }
        if let Some((extra, _)) = fields.iter().find(|(f, _)| !signature.inputs.iter().any(|i| &i.name == f)) {
            return Err(SignatureError(format!("schema property '{extra}' is not an input of the model")));
        }
        Ok(Self { inputs })
    }
}

fn check_type(field: &str, json_type: &str, elem: ElemType) -> Result<(), SignatureError> {
    let ok = json_type == elem.json_type() || (json_type == "integer" && elem.json_type() == "number");
    if ok {
        Ok(())
    } else {
        Err(SignatureError(format!(
            "schema property '{field}' has type '{json_type}' but the model takes {elem} (schema type '{}')",
            elem.json_type()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, elem: ElemType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), elem, shape: shape.to_vec() }
    }

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn feature_inputs_map_by_name() {
        let sig = Signature {
            inputs: vec![info("a", ElemType::F32, &[-1, 1]), info("b", ElemType::String, &[-1])],
            outputs: vec![],
        };
        let plan = FeedPlan::new(&sig, &fields(&[("b", "string"), ("a", "integer")])).unwrap();
        assert_eq!(plan.inputs[0].fields, ["a"]);
        assert_eq!(plan.inputs[0].rank, 2);
        assert_eq!(plan.inputs[1].rank, 1);
    }

    #[test]
    fn matrix_input_takes_columns_in_schema_order() {
        let sig = Signature { inputs: vec![info("x", ElemType::F32, &[-1, 3])], outputs: vec![] };
        let plan = FeedPlan::new(&sig, &fields(&[("c", "number"), ("a", "number"), ("b", "integer")])).unwrap();
        assert_eq!(plan.inputs[0].fields, ["c", "a", "b"]);
        let err = FeedPlan::new(&sig, &fields(&[("c", "number")])).unwrap_err();
        assert!(err.0.contains("3 columns but the schema names 1"), "{err}");
    }

    #[test]
    fn mismatches_are_load_errors() {
        let sig = Signature { inputs: vec![info("a", ElemType::I64, &[-1, 1])], outputs: vec![] };
        let err = FeedPlan::new(&sig, &fields(&[("a", "number")])).unwrap_err();
        assert!(err.0.contains("has type 'number' but the model takes int64"), "{err}");
        let err = FeedPlan::new(&sig, &fields(&[("a", "integer"), ("z", "integer")])).unwrap_err();
        assert!(err.0.contains("'z' is not an input"), "{err}");
        let err = FeedPlan::new(&sig, &fields(&[])).unwrap_err();
        assert!(err.0.contains("no property for model input 'a'"), "{err}");
        let sig = Signature { inputs: vec![info("img", ElemType::F32, &[-1, 3, 224, 224])], outputs: vec![] };
        assert!(FeedPlan::new(&sig, &fields(&[("img", "number")])).is_err());
    }
}
