//! The protobuf wire format: fields as (number, value) pairs.

use super::bad;
use crate::error::ApiResult;

/// One field's value as encoded.
pub enum Wire<'a> {
    Varint(u64),
    /// A fixed 64- or 32-bit value; no field read here has one.
    Fixed,
    Bytes(&'a [u8]),
}

/// The fields of one message, in order.
pub fn fields(mut buf: &[u8]) -> ApiResult<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut buf)?),
            1 | 5 => {
                take(&mut buf, if key & 7 == 1 { 8 } else { 4 })?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| bad("length"))?;
                Wire::Bytes(take(&mut buf, len)?)
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> ApiResult<&'a [u8]> {
    if n > buf.len() {
        return Err(bad("truncated field"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// One base-128 varint.
pub fn varint(buf: &mut &[u8]) -> ApiResult<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| bad("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}
