//! Framing of regular messages (everything after the startup packet): a tag
//! byte, an Int32 length that counts itself and the body but not the tag,
//! and the body. The length is validated as soon as its 5 header bytes are
//! there, before any of the body is waited for, so a peer cannot make the
//! proxy buffer more than the configured maximum.

use bytes::{Bytes, BytesMut};

use super::CodecError;

/// The largest length field accepted by default: 1 GiB, PostgreSQL's own
/// limit on a single allocation (`MaxAllocSize` is 1 GiB - 1), so no message
/// a real server or libpq exchanges is refused. The proxy passes its
/// configured (usually much smaller) maximum instead.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// Tag byte + Int32 length.
pub const HEADER_LEN: usize = 5;

/// One complete regular message: tag byte + Int32 length + body. `raw` holds
/// all of it, so an unchanged message is forwarded as `raw`, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub raw: Bytes,
}

impl Frame {
    /// The body (after tag and length).
    pub fn body(&self) -> &[u8] {
        self.raw.get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Length of `raw` (the whole message including the tag).
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Never true for a frame from [`decode_frame`] (it has at least the
    /// 5 header bytes).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// Reads the header at the front of `buf`: `Ok(None)` if fewer than 5 bytes
/// are there, else the tag and the total frame size (tag included). Checks
/// the length like [`decode_frame`]. Lets a proxy decide what to do with a
/// message (hold it whole, or pass it on as it streams) before its body is
/// buffered.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, CodecError> {
    let Some((&[tag, a, b, c, d], _)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    let Ok(ulen) = u32::try_from(len) else {
        return Err(CodecError::NegativeLength {
            tag: Some(tag),
            len,
        });
    };
    if ulen < 4 {
        return Err(CodecError::LengthTooShort {
            tag: Some(tag),
            len: ulen,
            min: 4,
        });
    }
    // u32 always fits usize on the 32/64-bit targets Warden builds for.
    let ulen = ulen as usize;
    if ulen > max_len {
        return Err(CodecError::TooLong {
            tag: Some(tag),
            len: ulen,
            max: max_len,
        });
    }
    Ok(Some((tag, ulen + 1)))
}

/// Splits one frame off the front of `buf` if it is complete; `Ok(None)` if
/// more bytes are needed (`buf` is then left untouched).
///
/// Errors, as soon as the 5 header bytes are present: a length below 4,
/// negative (as Int32), or above `max_len` (the length field, which counts
/// itself and the body). An error is fatal for the connection: the stream
/// cannot be resynchronised.
pub fn decode_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, CodecError> {
    let Some((tag, total)) = header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        raw: buf.split_to(total).freeze(),
    }))
}

/// How many more bytes the frame at the front of `buf` needs before
/// [`decode_frame`] returns it: 0 if it is complete, `5 - buf.len()` while
/// the header is incomplete. Lets a reader read at most up to the end of
/// the current frame; validates the header like `decode_frame`.
pub fn bytes_needed(buf: &[u8], max_len: usize) -> Result<usize, CodecError> {
    match header(buf, max_len)? {
        None => Ok(HEADER_LEN - buf.len()),
        Some((_, total)) => Ok(total.saturating_sub(buf.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn splits_frames_and_keeps_rest() {
        let mut b = buf(b"Z\0\0\0\x05IS\0\0\0\x04X");
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(f.tag, b'Z');
        assert_eq!(f.body(), b"I");
        assert_eq!(f.len(), 6);
        assert!(!f.is_empty());
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'S', &b""[..]));
        assert_eq!(&b[..], b"X");
        assert_eq!(decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap(), None);
        assert_eq!(&b[..], b"X");
    }

    #[test]
    fn byte_by_byte() {
        let wire = b"T\0\0\0\x06\0\0D\0\0\0\x04";
        let mut b = BytesMut::new();
        let mut frames = Vec::new();
        for (i, &byte) in wire.iter().enumerate() {
            let need = bytes_needed(&b, 100).unwrap();
            assert!(need >= 1, "needs more at byte {i}");
            b.extend_from_slice(&[byte]);
            while let Some(f) = decode_frame(&mut b, 100).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].raw, &wire[..7]);
        assert_eq!(frames[1].raw, &wire[7..]);
        assert!(b.is_empty());
        assert_eq!(bytes_needed(&b, 100).unwrap(), 5);
    }

    #[test]
    fn bytes_needed_counts_body() {
        assert_eq!(bytes_needed(b"Q\0\0", 100).unwrap(), 2);
        assert_eq!(bytes_needed(b"Q\0\0\0\x08ab", 100).unwrap(), 2);
        assert_eq!(bytes_needed(b"Q\0\0\0\x08abcdXX", 100).unwrap(), 0);
    }

    #[test]
    fn bad_lengths() {
        for (len, want) in [
            (
                0i32,
                CodecError::LengthTooShort {
                    tag: Some(b'Q'),
                    len: 0,
                    min: 4,
                },
            ),
            (
                3,
                CodecError::LengthTooShort {
                    tag: Some(b'Q'),
                    len: 3,
                    min: 4,
                },
            ),
            (
                -1,
                CodecError::NegativeLength {
                    tag: Some(b'Q'),
                    len: -1,
                },
            ),
            (
                i32::MIN,
                CodecError::NegativeLength {
                    tag: Some(b'Q'),
                    len: i32::MIN,
                },
            ),
            (
                101,
                CodecError::TooLong {
                    tag: Some(b'Q'),
                    len: 101,
                    max: 100,
                },
            ),
        ] {
            let mut b = buf(b"Q");
            b.extend_from_slice(&len.to_be_bytes());
            assert_eq!(decode_frame(&mut b, 100), Err(want.clone()), "len {len}");
            assert_eq!(bytes_needed(&b, 100), Err(want));
        }
        // Exactly the maximum is fine.
        let mut b = buf(b"Q\0\0\0\x64");
        assert_eq!(decode_frame(&mut b, 100).unwrap(), None);
    }

    #[test]
    fn too_long_errors_before_body_arrives() {
        // Header claims 1 GiB + 1 with a 1 MiB maximum: error with only the
        // header present, nothing reserved.
        let mut b = buf(b"D");
        b.extend_from_slice(&((1i32 << 30) + 1).to_be_bytes());
        let cap = b.capacity();
        assert!(matches!(
            decode_frame(&mut b, 1 << 20),
            Err(CodecError::TooLong { len, max, .. }) if len == (1 << 30) + 1 && max == 1 << 20
        ));
        assert_eq!(b.capacity(), cap);
        // The default maximum also refuses past 1 GiB.
        assert!(matches!(
            decode_frame(&mut b, DEFAULT_MAX_MESSAGE),
            Err(CodecError::TooLong { .. })
        ));
    }

    #[test]
    fn body_of_handmade_short_frame_is_empty() {
        let f = Frame {
            tag: b'S',
            raw: Bytes::from_static(b"S\0"),
        };
        assert_eq!(f.body(), b"");
    }
}
