//! The service's codec (build.rs names it with `codec_path`): tonic's prost codec, except that
//! a message which does not decode is the client's error, INVALID_ARGUMENT with prost's account
//! of what is wrong, where tonic's is INTERNAL, which this server keeps for its own faults.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// Encodes `T` as tonic's prost codec does; decodes `U` with [`ProtoDecoder`].
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self { prost: ProstCodec::default() }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder { _message: PhantomData }
    }
}

/// Decodes one message; a malformed one is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| Status::invalid_argument(malformed(&error)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// prost's account (the message and field where decoding failed, and why), said as the
/// client's error.
fn malformed(error: &prost::DecodeError) -> String {
    format!("the message is not valid protobuf: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto::ModelInferRequest;

    #[test]
    fn a_malformed_message_names_where_it_broke() {
        // Field 1 (model_name) declared 100 bytes long with 2 sent.
        let error = ModelInferRequest::decode(&[0x0a, 100, b'a', b'b'][..]).unwrap_err();
        let message = malformed(&error);
        assert!(message.starts_with("the message is not valid protobuf: "), "{message}");
        assert!(message.contains("ModelInferRequest"), "{message}");
    }
}
