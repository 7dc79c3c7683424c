//! A unary call's body checked frame by frame on its way into tonic: exactly one message, its
//! 5-byte prefix well formed. tonic answers the faults found here with INTERNAL (a body that
//! ends inside a message, one with no message, a flag other than 0 or 1, a compressed flag on
//! a call that named no compression) or not at all (it drops a second message unread); each is
//! the client's error, so it is INVALID_ARGUMENT here, with a message saying what was wrong.
//!
//! A message declared longer than `server.body_limit_bytes` is refused from its prefix, before
//! it is read, as REST refuses such a body: the table's `payload_too_large`, RESOURCE_EXHAUSTED
//! (what grpc-go and gRPC C++ answer; tonic's own check would say OUT_OF_RANGE).
//!
//! gRPC's compression document asks for INTERNAL on a compressed flag without `grpc-encoding`;
//! this server keeps INTERNAL for its own faults (it is what its alerts count), and a client
//! library that sets the flag wrongly is told so as plainly with INVALID_ARGUMENT.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Bytes, Frame, SizeHint};
use tonic::Status;

use super::error;
use crate::http::error::ApiError;

/// The gRPC message prefix: a flag byte (1: compressed) and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// `request` with its body checked as one unary message (see the module's documentation).
pub fn one_message(request: Request, limit: usize) -> Request {
    // tonic refuses an encoding it does not support (UNIMPLEMENTED) before reading the body,
    // so a compressed message is only possible with one it supports.
    let compression = request.headers().get("grpc-encoding").is_some_and(|value| value != "identity");
    request.map(|body| Body::new(OneMessage { body, framing: Framing::new(compression, limit), ended: false }))
}

/// A body passed through unchanged while [`Framing`] finds it well formed; at the first fault,
/// an error carrying the status, which tonic answers with (it looks for a `Status` among a body
/// error's sources).
struct OneMessage {
    body: Body,
    framing: Framing,
    ended: bool,
}

impl hyper::body::Body for OneMessage {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        let checked = match &polled {
            Some(Ok(frame)) => frame.data_ref().map_or(Ok(()), |data| this.framing.feed(data)),
            // The client's own failure (a reset stream, a lost connection): tonic's to read.
            Some(Err(_)) => Ok(()),
            None => this.framing.finish(),
        };
        if let Err(fault) = checked {
            this.ended = true;
            let status = match fault {
                Fault::TooLarge { limit, .. } => error::status(ApiError::PayloadTooLarge { limit }),
                fault => Status::invalid_argument(fault.to_string()),
            };
            return Poll::Ready(Some(Err(axum::Error::new(status))));
        }
        this.ended = !matches!(polled, Some(Ok(_)));
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        // Not the inner body's: its end is where a message cut short is found.
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What is wrong with a unary call's framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("the call carries no message: a unary call sends exactly one")]
    NoMessage,
    #[error("the message's flag byte must be 0 (uncompressed) or 1 (compressed), got {0}")]
    BadFlag(u8),
    #[error("the message is marked compressed, but the call names no grpc-encoding")]
    CompressedWithoutEncoding,
    #[error("the body ended inside the message's 5-byte prefix, after {0} bytes")]
    CutPrefix(usize),
    #[error("the body ended inside the message: {got} of its {declared} bytes arrived")]
    CutMessage { got: u64, declared: u64 },
    #[error("more follows the message: a unary call carries exactly one")]
    Trailing,
    #[error("the message is {declared} bytes, over the limit of {limit} bytes")]
    TooLarge { declared: u64, limit: usize },
}

/// Where a unary call's body is: in the message's prefix, in the message, or past it.
#[derive(Debug)]
pub struct Framing {
    /// Whether the call named a compression, so that a compressed message is allowed.
    compression: bool,
    /// The longest message taken (`server.body_limit_bytes`).
    limit: usize,
    prefix: [u8; PREFIX],
    /// Bytes of the prefix seen.
    prefixed: usize,
    /// The message's declared length and the bytes of it seen, once the prefix is whole.
    message: Option<(u64, u64)>,
}

impl Framing {
    pub fn new(compression: bool, limit: usize) -> Self {
        Self { compression, limit, prefix: [0; PREFIX], prefixed: 0, message: None }
    }

    /// Takes the body's next bytes.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Fault> {
        while !data.is_empty() {
            match &mut self.message {
                Some((declared, got)) if got == declared => return Err(Fault::Trailing),
                Some((declared, got)) => {
                    let taken = (*declared - *got).min(data.len() as u64);
                    *got += taken;
                    data = &data[taken as usize..];
                }
                None => {
                    let taken = (PREFIX - self.prefixed).min(data.len());
                    self.prefix[self.prefixed..self.prefixed + taken].copy_from_slice(&data[..taken]);
                    self.prefixed += taken;
                    data = &data[taken..];
                    if self.prefixed == PREFIX {
                        match self.prefix[0] {
                            0 => {}
                            1 if self.compression => {}
                            1 => return Err(Fault::CompressedWithoutEncoding),
                            flag => return Err(Fault::BadFlag(flag)),
                        }
                        let length = u64::from(u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes")));
                        if length > self.limit as u64 {
                            return Err(Fault::TooLarge { declared: length, limit: self.limit });
                        }
                        self.message = Some((length, 0));
                    }
                }
            }
        }
        Ok(())
    }

    /// The body has ended: was the message whole?
    pub fn finish(&self) -> Result<(), Fault> {
        match self.message {
            Some((declared, got)) if got == declared => Ok(()),
            Some((declared, got)) => Err(Fault::CutMessage { got, declared }),
            None if self.prefixed == 0 => Err(Fault::NoMessage),
            None => Err(Fault::CutPrefix(self.prefixed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut body = vec![flag];
        body.extend((message.len() as u32).to_be_bytes());
        body.extend(message);
        body
    }

    /// `body` fed in pieces of `piece` bytes, then finished.
    fn check(body: &[u8], piece: usize, compression: bool) -> Result<(), Fault> {
        let mut framing = Framing::new(compression, 1024);
        for chunk in body.chunks(piece) {
            framing.feed(chunk)?;
        }
        framing.finish()
    }

    #[test]
    fn one_whole_message_passes_however_it_is_cut() {
        let body = framed(0, b"hello");
        for piece in 1..=body.len() {
            assert_eq!(check(&body, piece, false), Ok(()), "in pieces of {piece}");
        }
        assert_eq!(check(&framed(0, b""), 1, false), Ok(()), "an empty message is a message");
        assert_eq!(check(&framed(1, b"zz"), 3, true), Ok(()), "compressed, with an encoding named");
    }

    #[test]
    fn each_fault_is_named() {
        assert_eq!(check(b"", 1, false), Err(Fault::NoMessage));
        assert_eq!(check(&[0, 0, 0], 2, false), Err(Fault::CutPrefix(3)));
        assert_eq!(check(&framed(0, b"hello")[..8], 4, false), Err(Fault::CutMessage { got: 3, declared: 5 }));
        assert_eq!(check(&framed(7, b"hello"), 5, false), Err(Fault::BadFlag(7)));
        assert_eq!(check(&framed(1, b"hello"), 5, false), Err(Fault::CompressedWithoutEncoding));
        let mut two = framed(0, b"one");
        two.extend(framed(0, b"two"));
        assert_eq!(check(&two, 1, false), Err(Fault::Trailing));
        assert_eq!(check(&two, two.len(), false), Err(Fault::Trailing));
        let mut one_more_byte = framed(0, b"one");
        one_more_byte.push(0);
        assert_eq!(check(&one_more_byte, 2, false), Err(Fault::Trailing));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_from_the_prefix() {
        let mut framing = Framing::new(false, 1024);
        assert_eq!(framing.feed(&[0, 0, 0, 4, 0]), Ok(()), "1024 bytes: at the limit");
        let mut framing = Framing::new(false, 1024);
        assert_eq!(framing.feed(&[0, 0, 0, 4, 1]), Err(Fault::TooLarge { declared: 1025, limit: 1024 }));
        let mut framing = Framing::new(false, 1024);
        assert_eq!(framing.feed(&[0, 0xff, 0xff]), Ok(()), "not known until the prefix is whole");
        assert_eq!(
            framing.feed(&[0xff, 0xff, 1, 2]),
            Err(Fault::TooLarge { declared: u64::from(u32::MAX), limit: 1024 })
        );
    }
}
