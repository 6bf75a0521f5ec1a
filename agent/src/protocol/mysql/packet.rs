//! MySQL packet framing: a 3-byte little-endian payload length and a
//! 1-byte sequence id before each payload. A payload of 2^24-1 bytes or more
//! is split into frames of exactly 2^24-1 bytes followed by a shorter one
//! (possibly empty); [`decode`] joins them back, refusing a logical packet
//! longer than the caller's maximum before buffering it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload of one frame; a frame this long continues in the next.
pub const MAX_FRAME: usize = 0xFF_FFFF;

/// Why a byte stream is not a sequence of packets Warden accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The packet (all its frames) is longer than the maximum.
    #[error("packet of at least {len} bytes is longer than the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// A continuation frame did not carry the next sequence id.
    #[error("packet sequence id {got} where {expected} was expected")]
    Sequence { expected: u8, got: u8 },
}

/// One logical packet: its first frame's sequence id, the last frame's
/// sequence id and the joined payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub last_seq: u8,
    pub payload: Bytes,
}

/// Takes one whole logical packet off the front of `buf`: `Ok(None)` when
/// more bytes are needed (nothing is consumed then).
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, FrameError> {
    // First pass: find where the packet ends without consuming.
    let mut at = 0usize;
    let mut total = 0usize;
    let mut first_seq = None;
    let mut expected = 0u8;
    let last_seq = loop {
        let Some(head) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        let seq = head[3];
        match first_seq {
            None => first_seq = Some(seq),
            Some(_) if seq != expected => {
                return Err(FrameError::Sequence { expected, got: seq });
            }
            Some(_) => {}
        }
        expected = seq.wrapping_add(1);
        total += len;
        if total > max {
            return Err(FrameError::TooLong { len: total, max });
        }
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        at += 4 + len;
        if len < MAX_FRAME {
            break seq;
        }
    };
    let seq = first_seq.unwrap_or(0);
    let mut frames = buf.split_to(at);
    let payload = if at == total + 4 {
        // One frame: no copy.
        frames.advance(4);
        frames.freeze()
    } else {
        let mut joined = BytesMut::with_capacity(total);
        while frames.has_remaining() {
            let len =
                usize::from(frames[0]) | usize::from(frames[1]) << 8 | usize::from(frames[2]) << 16;
            frames.advance(4);
            joined.put_slice(&frames[..len]);
            frames.advance(len);
        }
        joined.freeze()
    };
    Ok(Some(Packet {
        seq,
        last_seq,
        payload,
    }))
}

/// Appends `payload` as one logical packet starting at sequence id `*seq`
/// (advanced past the frames written).
pub fn encode(seq: &mut u8, payload: &[u8], out: &mut BytesMut) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        out.reserve(4 + n);
        // n < 2^24: the three low bytes hold it.
        out.put_uint_le(n as u64, 3);
        out.put_u8(*seq);
        *seq = seq.wrapping_add(1);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_FRAME {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![
            payload.len() as u8,
            (payload.len() >> 8) as u8,
            (payload.len() >> 16) as u8,
            seq,
        ];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn one_frame_round_trips_and_partial_input_waits() {
        let mut out = BytesMut::new();
        let mut seq = 3;
        encode(&mut seq, b"\x03SELECT 1", &mut out);
        assert_eq!(seq, 4);
        let whole = out.clone();
        let mut part = BytesMut::from(&whole[..6]);
        assert_eq!(decode(&mut part, 100), Ok(None));
        assert_eq!(part.len(), 6, "nothing consumed");
        let p = decode(&mut out, 100).unwrap().unwrap();
        assert_eq!((p.seq, p.last_seq), (3, 3));
        assert_eq!(&p.payload[..], b"\x03SELECT 1");
        assert!(out.is_empty());
    }

    #[test]
    fn a_packet_past_the_maximum_is_refused_before_it_is_buffered() {
        // Only the header of a 16 MiB frame has arrived.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0][..]);
        assert_eq!(
            decode(&mut buf, 1 << 20),
            Err(FrameError::TooLong {
                len: MAX_FRAME,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn split_packets_are_joined_and_a_wrong_continuation_sequence_is_refused() {
        let big = vec![b'x'; MAX_FRAME + 5];
        let mut out = BytesMut::new();
        let mut seq = 0;
        encode(&mut seq, &big, &mut out);
        assert_eq!(seq, 2);
        let p = decode(&mut out.clone(), 1 << 25).unwrap().unwrap();
        assert_eq!((p.seq, p.last_seq, p.payload.len()), (0, 1, big.len()));
        // Exactly one full frame needs an empty one after it.
        let mut out2 = BytesMut::new();
        let mut seq = 0;
        encode(&mut seq, &big[..MAX_FRAME], &mut out2);
        assert_eq!(seq, 2);
        assert_eq!(out2.len(), MAX_FRAME + 8);
        // The continuation with sequence id 7 instead of 1.
        let mut bad = BytesMut::from(&out[..MAX_FRAME + 4]);
        bad.extend_from_slice(&frame(7, b"xxxxx"));
        assert_eq!(
            decode(&mut bad, 1 << 25),
            Err(FrameError::Sequence {
                expected: 1,
                got: 7
            })
        );
    }
}
