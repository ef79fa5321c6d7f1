//! The protobuf wire format, read and rewritten field by field, for the APIs' gRPC forms
//! ([`super::GrpcApi`]): every byte that is not replaced is copied as it came, so fields
//! the proxy does not know (newer API versions, extensions) survive; only the enclosing
//! lengths are re-encoded.

use super::ProtocolError;

/// Wire type of length-delimited fields (bytes, strings, messages).
pub(crate) const LEN: u8 = 2;

/// One field of a protobuf message, as byte ranges of the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) wire: u8,
    /// The whole field (tag, length and value).
    start: usize,
    end: usize,
    /// The value (for `LEN` fields, without the length).
    value_start: usize,
}

impl Field {
    fn raw<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.start..self.end]
    }
    pub(crate) fn value<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.value_start..self.end]
    }
}

pub(crate) fn bad(why: &str) -> ProtocolError {
    ProtocolError::Malformed {
        what: "request body",
        format: "a gRPC protobuf message",
        detail: why.to_owned(),
    }
}

/// Most fields read in one message (a bound on work for hostile input).
const MAX_FIELDS: usize = 100_000;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtocolError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

/// The top-level fields of `msg`, in order.
pub(crate) fn fields(msg: &[u8]) -> Result<Vec<Field>, ProtocolError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        if out.len() >= MAX_FIELDS {
            return Err(ProtocolError::TooComplex {
                what: "request body",
                unit: "protobuf fields",
                count: out.len(),
                limit: MAX_FIELDS,
            });
        }
        let start = pos;
        let tag = varint(msg, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| bad("field number too large"))?;
        let wire = (tag & 7) as u8;
        if number == 0 {
            return Err(bad("field number 0"));
        }
        let value_start = match wire {
            0 => {
                varint(msg, &mut pos)?;
                start
            }
            1 => {
                pos += 8;
                start
            }
            5 => {
                pos += 4;
                start
            }
            LEN => {
                let len =
                    usize::try_from(varint(msg, &mut pos)?).map_err(|_| bad("length too large"))?;
                let value_start = pos;
                pos = pos
                    .checked_add(len)
                    .ok_or_else(|| bad("length too large"))?;
                value_start
            }
            _ => return Err(bad("unsupported wire type (groups)")),
        };
        if pos > msg.len() {
            return Err(bad("field runs past the message"));
        }
        out.push(Field {
            number,
            wire,
            start,
            end: pos,
            value_start,
        });
    }
    Ok(out)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_len_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A field's new value from its old one.
pub(crate) type Rewriter<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, ProtocolError> + 'a;

/// `msg` with its first `number` field (a message or bytes) replaced by `f(old value)`;
/// every other byte copied as it came. A message without the field is returned unchanged.
pub(crate) fn rewrite(msg: &[u8], number: u32, f: &Rewriter<'_>) -> Result<Vec<u8>, ProtocolError> {
    let out = rewrite_fields(msg, number, |occurrence, value| {
        if occurrence == 0 {
            f(value).map(Some)
        } else {
            Ok(None)
        }
    })?;
    Ok(out.unwrap_or_else(|| msg.to_vec()))
}

/// `msg` with its `number` fields (messages or bytes) given to `f` in order, with their
/// occurrence (0, 1, …): `Some(new value)` replaces the value (its length re-encoded),
/// `None` keeps the field's bytes as they came; every other field is copied as it came.
/// `None` when no field was replaced (the message is unchanged).
pub(crate) fn rewrite_fields(
    msg: &[u8],
    number: u32,
    mut f: impl FnMut(usize, &[u8]) -> Result<Option<Vec<u8>>, ProtocolError>,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut out = Vec::with_capacity(msg.len());
    let mut occurrence = 0;
    let mut changed = false;
    for field in fields(msg)? {
        if field.number == number && field.wire == LEN {
            match f(occurrence, field.value(msg))? {
                Some(value) => {
                    put_len_field(&mut out, number, &value);
                    changed = true;
                }
                None => out.extend_from_slice(field.raw(msg)),
            }
            occurrence += 1;
        } else {
            out.extend_from_slice(field.raw(msg));
        }
    }
    Ok(changed.then_some(out))
}

/// An answer message the proxy cannot read.
pub(crate) fn unexpected(detail: String) -> ProtocolError {
    ProtocolError::UnexpectedAnswer { detail }
}

/// An answer message decoded as `M` (named `what` in the error).
pub(crate) fn decode<M: prost::Message + Default>(
    msg: &[u8],
    what: &str,
) -> Result<M, ProtocolError> {
    M::decode(msg).map_err(|e| unexpected(format!("{what}: {e}")))
}
