//! ModelInfer's request as the predict service's [`Input`], and its answer. The tensors go
//! through the same reader as REST's `/v2` (`decode::oip`): `raw_input_contents` as they are,
//! typed `contents` first written out in the same little-endian layout.

use std::collections::HashMap;
use std::time::Duration;

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::batch::Inferred;
use crate::decode::oip::{self, InferInput, RequestedOutput};
use crate::decode::{self, DecodeError};
use crate::http::v2::{joined_outputs, output_shape};
use crate::model::ModelSpec;
use crate::service::{BodyError, Deadline, Decoded, Input};

/// A ModelInfer request, received whole (tonic holds it to the body limit) before the service
/// is called.
pub struct Message(pub ModelInferRequest);

impl Input for Message {
    async fn receive(&mut self, _: Deadline) -> Result<(), BodyError> {
        Ok(())
    }

    fn count(&mut self) -> Option<usize> {
        self.0.inputs.first().and_then(|i| i.shape.first()).and_then(|n| usize::try_from(*n).ok())
    }

    fn decode(&mut self, model: decode::Model<'_>, max_rows: usize) -> Result<Decoded, DecodeError> {
        let request = &self.0;
        let timeout = timeout(&request.parameters)?;
        oip::selected_outputs(model.outputs, Some(&requested(request)))?;
        let inputs: Vec<InferInput> = request
            .inputs
            .iter()
            .map(|i| InferInput {
                name: i.name.clone(),
                shape: i.shape.clone(),
                datatype: i.datatype.clone(),
                parameters: None,
                data: None,
            })
            .collect();
        let typed: Vec<Vec<u8>>;
        let parts: Vec<Option<&[u8]>> = if request.raw_input_contents.is_empty() {
            typed = request.inputs.iter().map(typed_bytes).collect::<Result<_, _>>()?;
            typed.iter().map(|b| Some(b.as_slice())).collect()
        } else {
            if let Some(both) = request.inputs.iter().find(|i| i.contents.is_some()) {
                return Err(DecodeError::invalid(format!(
                    "input '{}': has `contents` although `raw_input_contents` is given; send one",
                    crate::error::clip(&both.name)
                )));
            }
            if request.raw_input_contents.len() != request.inputs.len() {
                return Err(DecodeError::invalid(format!(
                    "{} inputs, but {} raw_input_contents",
                    request.inputs.len(),
                    request.raw_input_contents.len()
                )));
            }
            request.raw_input_contents.iter().map(|b| Some(b.as_slice())).collect()
        };
        let rows = oip::to_rows_from_parts(model, &inputs, &parts, max_rows)?;
        Ok(Decoded { rows, timeout })
    }
}

/// The outputs asked for, by name (their parameters are ignored: outputs are always raw).
fn requested(request: &ModelInferRequest) -> Vec<RequestedOutput> {
    request.outputs.iter().map(|o| RequestedOutput { name: o.name.clone(), parameters: None }).collect()
}

/// The `timeout` parameter (microseconds above 0, as Triton takes it), as REST's
/// `parameters.timeout`.
fn timeout(parameters: &HashMap<String, InferParameter>) -> Result<Option<Duration>, DecodeError> {
    match parameters.get("timeout").map(|p| &p.parameter_choice) {
        None => Ok(None),
        Some(Some(ParameterChoice::Int64Param(us))) if *us > 0 => Ok(Some(Duration::from_micros(*us as u64))),
        Some(_) => Err(DecodeError::invalid("parameters.timeout must be a whole number of microseconds above 0")),
    }
}

/// An input's typed `contents` in the binary layout of raw contents (little-endian values;
/// BYTES as 4-byte lengths and bytes), so that one reader checks both against the shape.
fn typed_bytes(input: &InferInputTensor) -> Result<Vec<u8>, DecodeError> {
    let fail = |e: &str| DecodeError::invalid(format!("input '{}': {e}", crate::error::clip(&input.name)));
    let empty = InferTensorContents::default();
    let c = input.contents.as_ref().unwrap_or(&empty);
    let narrow = || fail(&format!("a value does not fit in {}", input.datatype));
    let mut out = Vec::new();
    match input.datatype.as_str() {
        "BOOL" => out.extend(c.bool_contents.iter().map(|b| u8::from(*b))),
        "INT8" => {
            for v in &c.int_contents {
                out.extend(i8::try_from(*v).map_err(|_| narrow())?.to_le_bytes());
            }
        }
        "INT16" => {
            for v in &c.int_contents {
                out.extend(i16::try_from(*v).map_err(|_| narrow())?.to_le_bytes());
            }
        }
        "INT32" => c.int_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "INT64" => c.int64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "UINT8" => {
            for v in &c.uint_contents {
                out.extend(u8::try_from(*v).map_err(|_| narrow())?.to_le_bytes());
            }
        }
        "UINT16" => {
            for v in &c.uint_contents {
                out.extend(u16::try_from(*v).map_err(|_| narrow())?.to_le_bytes());
            }
        }
        "UINT32" => c.uint_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "UINT64" => c.uint64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "FP32" => c.fp32_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "FP64" => c.fp64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        "BYTES" => {
            for v in &c.bytes_contents {
                out.extend((v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        // FP16 and BF16 have no typed field: the protocol sends them raw.
        other => {
            return Err(fail(&format!(
                "datatype {} has no typed contents; send it in raw_input_contents",
                crate::error::clip(other)
            )))
        }
    }
    Ok(out)
}

/// The answer: every output asked for (all by default) as raw contents, as Triton answers.
pub fn answer(spec: &ModelSpec, request: &ModelInferRequest, inferred: &Inferred) -> ModelInferResponse {
    let requested = requested(request);
    let outputs = oip::selected_outputs(&spec.v2_outputs, Some(&requested)).expect("checked by decode");
    let joined = joined_outputs(spec, inferred);
    let rows = inferred.rows();
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw = Vec::with_capacity(outputs.len());
    for (info, _) in outputs {
        let index = spec.v2_outputs.iter().position(|o| o.name == info.name).expect("a known output");
        let column = &joined.columns[index];
        let mut bytes = Vec::new();
        column.write_binary(0..column.len(), &mut bytes);
        raw.push(bytes);
        tensors.push(InferOutputTensor {
            name: info.name.clone(),
            datatype: info.elem.oip_datatype().to_owned(),
            shape: output_shape(info, rows, joined.per_row[index]),
            parameters: HashMap::new(),
            contents: None,
        });
    }
    ModelInferResponse {
        model_name: spec.name.clone(),
        model_version: spec.version.clone(),
        id: request.id.clone(),
        parameters: HashMap::new(),
        outputs: tensors,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(datatype: &str, contents: InferTensorContents) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: vec![2],
            parameters: HashMap::new(),
            contents: Some(contents),
        }
    }

    #[test]
    fn typed_contents_are_written_as_raw_contents_would_be() {
        let fp32 = InferTensorContents { fp32_contents: vec![1.5, -2.0], ..Default::default() };
        assert_eq!(
            typed_bytes(&input("FP32", fp32)).unwrap(),
            [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
        let bytes = InferTensorContents { bytes_contents: vec![b"ab".to_vec()], ..Default::default() };
        assert_eq!(typed_bytes(&input("BYTES", bytes)).unwrap(), [&2u32.to_le_bytes()[..], b"ab"].concat());
        let wide = InferTensorContents { int_contents: vec![300], ..Default::default() };
        let err = typed_bytes(&input("INT8", wide)).unwrap_err().to_string();
        assert!(err.contains("does not fit in INT8"), "{err}");
        let err = typed_bytes(&input("FP16", InferTensorContents::default())).unwrap_err().to_string();
        assert!(err.contains("raw_input_contents"), "{err}");
    }

    #[test]
    fn the_timeout_parameter_is_microseconds_above_zero() {
        let with = |choice| HashMap::from([("timeout".to_owned(), InferParameter { parameter_choice: Some(choice) })]);
        assert_eq!(timeout(&with(ParameterChoice::Int64Param(1500))).unwrap(), Some(Duration::from_micros(1500)));
        assert!(timeout(&with(ParameterChoice::Int64Param(0))).is_err());
        assert!(timeout(&with(ParameterChoice::StringParam("1".into()))).is_err());
        assert_eq!(timeout(&HashMap::new()).unwrap(), None);
    }
}
