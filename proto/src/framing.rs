//! One gRPC message as it travels in an HTTP/2 body: a 5-byte prefix (a compression flag and
//! the message's length, big-endian), then the message. For the RPCs the broker and the client
//! read and write beside tonic's codec, where record batches are kept in the frames they came
//! in instead of copied into a buffer of tonic's.

use std::fmt;

use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes, BytesMut};

/// The prefix of every gRPC message: a compression flag and a 4-byte length.
pub const PREFIX_BYTES: usize = 5;

/// `message` framed as the whole body of a unary call: prefix, then its encoding. `None` for a
/// message over 4 GiB, which the prefix cannot say.
pub fn framed(message: &impl Message) -> Option<Bytes> {
    let len = message.encoded_len();
    let mut framed = BytesMut::with_capacity(PREFIX_BYTES + len);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(len).ok()?);
    message.encode_raw(&mut framed);
    Some(framed.freeze())
}

/// Why a body is not one whole uncompressed gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnframeError {
    /// Fewer bytes than a prefix.
    Incomplete,
    /// The compression flag is set; Weir compresses nothing.
    Compressed,
    /// The prefix's length is not what follows it (a cut body, or more than one message).
    WrongLength {
        /// The length the prefix says.
        said: usize,
        /// The bytes that follow the prefix.
        follow: usize,
    },
}

impl fmt::Display for UnframeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete => f.write_str("holds no complete gRPC message"),
            Self::Compressed => f.write_str("is compressed, and Weir takes no compressed message"),
            Self::WrongLength { said, follow } => write!(
                f,
                "has a gRPC message that says {said} bytes but {follow} follow"
            ),
        }
    }
}

impl std::error::Error for UnframeError {}

/// Takes the prefix off `body`, checking that exactly one whole uncompressed message follows;
/// `body` is then that message.
pub fn unframe(body: &mut impl Buf) -> Result<(), UnframeError> {
    if body.remaining() < PREFIX_BYTES {
        return Err(UnframeError::Incomplete);
    }
    let compressed = body.get_u8();
    let said = body.get_u32() as usize;
    if compressed != 0 {
        return Err(UnframeError::Compressed);
    }
    let follow = body.remaining();
    if follow != said {
        return Err(UnframeError::WrongLength { said, follow });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::FetchRequest;

    #[test]
    fn a_framed_message_unframes_to_itself() {
        let message = FetchRequest {
            topic: "t".into(),
            offset: 7,
            ..FetchRequest::default()
        };
        let framed = framed(&message).expect("small");
        assert_eq!(framed[0], 0);
        assert_eq!(framed.len(), PREFIX_BYTES + message.encoded_len());
        let mut body = framed.clone();
        unframe(&mut body).expect("one whole message");
        assert_eq!(FetchRequest::decode(body).expect("decodes"), message);
    }

    #[test]
    fn anything_but_one_whole_uncompressed_message_is_refused() {
        let message = FetchRequest {
            topic: "t".into(),
            ..FetchRequest::default()
        };
        let framed = framed(&message).expect("small");
        let len = message.encoded_len();
        assert_eq!(
            unframe(&mut Bytes::from_static(b"\0\0")),
            Err(UnframeError::Incomplete)
        );
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(
            unframe(&mut Bytes::from(compressed)),
            Err(UnframeError::Compressed)
        );
        assert_eq!(
            unframe(&mut framed.slice(..framed.len() - 1)),
            Err(UnframeError::WrongLength {
                said: len,
                follow: len - 1
            })
        );
        let mut two = Bytes::from([framed.to_vec(), framed.to_vec()].concat());
        assert_eq!(
            unframe(&mut two),
            Err(UnframeError::WrongLength {
                said: len,
                follow: len + PREFIX_BYTES + len
            })
        );
    }
}
