//! Field-level reading and writing shared by the message modules: a
//! bounds-checked cursor over a message body, and a writer that patches the
//! length field and rolls back on error.

use bytes::{BufMut, BytesMut};

use super::CodecError;

/// A cursor over one message body. Every read is bounds-checked and names
/// the message and field on failure.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    msg: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], msg: &'static str) -> Self {
        Self { buf, msg }
    }

    pub(crate) fn msg(&self) -> &'static str {
        self.msg
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        match self.buf.split_at_checked(n) {
            Some((head, tail)) => {
                self.buf = tail;
                Ok(head)
            }
            None => Err(CodecError::Truncated {
                msg: self.msg,
                field,
            }),
        }
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], CodecError> {
        match self.buf.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.buf = tail;
                Ok(*head)
            }
            None => Err(CodecError::Truncated {
                msg: self.msg,
                field,
            }),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// An Int16 count, read unsigned as the server does.
    pub(crate) fn count16(&mut self, field: &'static str) -> Result<usize, CodecError> {
        Ok(usize::from(u16::from_be_bytes(self.array(field)?)))
    }

    /// An Int32 count; negative counts are rejected.
    pub(crate) fn count32(&mut self, field: &'static str) -> Result<usize, CodecError> {
        let count = self.i32(field)?;
        usize::try_from(count).map_err(|_| CodecError::NegativeCount {
            msg: self.msg,
            field,
            count,
        })
    }

    /// An Int16 format code, which must be 0 (text) or 1 (binary).
    pub(crate) fn format(&mut self, field: &'static str) -> Result<i16, CodecError> {
        let f = self.i16(field)?;
        if f == 0 || f == 1 {
            Ok(f)
        } else {
            Err(self.invalid(field, f.into()))
        }
    }

    /// A NUL-terminated string as bytes (without the NUL).
    pub(crate) fn cstr_bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        match memchr::memchr(0, self.buf) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                Ok(s)
            }
            None => Err(CodecError::MissingNul {
                msg: self.msg,
                field,
            }),
        }
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.cstr_bytes(field)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8 {
            msg: self.msg,
            field,
        })
    }

    /// An Int32 length followed by that many bytes; -1 is NULL.
    pub(crate) fn value(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, CodecError> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len)
            .map_err(|_| CodecError::InvalidValueLength { msg: self.msg, len })?;
        self.take(n, field).map(Some)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Capacity for `count` items of at least `min_size` wire bytes each,
    /// bounded by what is actually left in the message.
    pub(crate) fn capacity(&self, count: usize, min_size: usize) -> usize {
        count.min(self.buf.len() / min_size.max(1))
    }

    pub(crate) fn invalid(&self, field: &'static str, value: i64) -> CodecError {
        CodecError::InvalidValue {
            msg: self.msg,
            field,
            value,
        }
    }

    /// The message must end here.
    pub(crate) fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                msg: self.msg,
                extra: self.buf.len(),
            })
        }
    }
}

/// Appends the fields of one message; see [`encode`].
pub(crate) struct Writer<'o> {
    out: &'o mut BytesMut,
    msg: &'static str,
}

impl Writer<'_> {
    fn unencodable(&self, field: &'static str, reason: &'static str) -> CodecError {
        CodecError::Unencodable {
            msg: self.msg,
            field,
            reason,
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.put_u8(v);
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.out.put_i16(v);
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.out.put_i32(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.put_u32(v);
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.out.put_slice(v);
    }

    /// A count the protocol carries as Int16 (read unsigned by the server).
    pub(crate) fn count16(&mut self, n: usize, field: &'static str) -> Result<(), CodecError> {
        let n = u16::try_from(n).map_err(|_| self.unencodable(field, "more than 65535 items"))?;
        self.out.put_u16(n);
        Ok(())
    }

    /// An Int32 count.
    pub(crate) fn count32(&mut self, n: usize, field: &'static str) -> Result<(), CodecError> {
        let n = i32::try_from(n).map_err(|_| self.unencodable(field, "count exceeds Int32"))?;
        self.out.put_i32(n);
        Ok(())
    }

    /// A NUL-terminated string; interior NULs cannot be encoded.
    pub(crate) fn cstr_bytes(&mut self, s: &[u8], field: &'static str) -> Result<(), CodecError> {
        if memchr::memchr(0, s).is_some() {
            return Err(self.unencodable(field, "contains a NUL byte"));
        }
        self.out.put_slice(s);
        self.out.put_u8(0);
        Ok(())
    }

    pub(crate) fn cstr(&mut self, s: &str, field: &'static str) -> Result<(), CodecError> {
        self.cstr_bytes(s.as_bytes(), field)
    }

    /// An Int32 length and the bytes, or -1 for NULL.
    pub(crate) fn value(
        &mut self,
        v: Option<&[u8]>,
        field: &'static str,
    ) -> Result<(), CodecError> {
        match v {
            None => self.out.put_i32(-1),
            Some(v) => {
                let n = i32::try_from(v.len())
                    .map_err(|_| self.unencodable(field, "longer than Int32"))?;
                self.out.put_i32(n);
                self.out.put_slice(v);
            }
        }
        Ok(())
    }

    pub(crate) fn fail(&self, field: &'static str, reason: &'static str) -> CodecError {
        self.unencodable(field, reason)
    }
}

/// Appends one message: the tag (if any), an Int32 length patched once the
/// body is written, and the body written by `body`. On error `out` is left
/// as it was.
pub(crate) fn encode<F>(
    out: &mut BytesMut,
    tag: Option<u8>,
    msg: &'static str,
    body: F,
) -> Result<(), CodecError>
where
    F: FnOnce(&mut Writer<'_>) -> Result<(), CodecError>,
{
    let start = out.len();
    if let Some(t) = tag {
        out.put_u8(t);
    }
    let len_at = out.len();
    out.put_i32(0);
    let written = {
        let mut w = Writer {
            out: &mut *out,
            msg,
        };
        body(&mut w)
    };
    let len = written.and_then(|()| {
        i32::try_from(out.len() - len_at).map_err(|_| CodecError::Unencodable {
            msg,
            field: "length",
            reason: "message longer than Int32",
        })
    });
    match len {
        Ok(len) => {
            out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Appends a message with an empty body.
pub(crate) fn encode_empty(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_i32(4);
}
