//! gRPC health checking (`grpc.health.v1.Health/Check`), chosen by setting the health check
//! path to [`GRPC_HEALTH_PATH`]: a gRPC call is an HTTP/2 POST to the method's path, so the
//! existing `healthCheck.path` names it without a field of its own, on the endpoint's port
//! (Blaze workers serve HTTP/1.1, HTTP/2 and gRPC on one port).
//!
//! The messages are small enough to write and read by hand: the request is an empty
//! `HealthCheckRequest` (the server's overall health), and the answer passes when the call
//! ends with `grpc-status: 0` and its `HealthCheckResponse.status` (field 1) is `SERVING` (1).

use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::relay::{self, Upstream};

/// The health check path that selects gRPC health checking.
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// The `Check` call with an empty request (the whole server's health), for `uri` (the
/// endpoint's absolute URI with [`GRPC_HEALTH_PATH`]).
pub fn request(uri: http::Uri) -> Request<Upstream> {
    // One uncompressed message of length zero: an empty HealthCheckRequest.
    let mut req = Request::new(relay::buffered(Bytes::from_static(&[0, 0, 0, 0, 0])));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    let h = req.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    req
}

/// Whether the answer says `SERVING`.
pub async fn serving(resp: Response<Incoming>) -> bool {
    if !resp.status().is_success() {
        return false;
    }
    let (parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else { return false };
    // `grpc-status` comes in the trailers, or in the headers of a trailers-only answer.
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .map(HeaderValue::as_bytes);
    status == Some(b"0") && message_status(collected.to_bytes()) == Some(SERVING)
}

/// The `status` field of the one length-prefixed `HealthCheckResponse` in `body`.
fn message_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = usize::try_from(body.get_u32()).ok()?;
    let mut msg = body.get(..len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match key & 7 {
            0 => {
                let v = varint(&mut msg)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = usize::try_from(varint(&mut msg)?).ok()?;
                msg = msg.get(n..)?;
            }
            // Fixed 64- and 32-bit fields, which this message does not have.
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msg: &[u8]) -> Bytes {
        let mut b = vec![0];
        b.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
        b.extend_from_slice(msg);
        Bytes::from(b)
    }

    #[test]
    fn the_status_field_is_read_from_the_framed_message() {
        assert_eq!(message_status(framed(&[0x08, 0x01])), Some(SERVING));
        assert_eq!(message_status(framed(&[0x08, 0x02])), Some(2), "NOT_SERVING");
        // An empty message is the default status, UNKNOWN.
        assert_eq!(message_status(framed(&[])), Some(0));
        // Unknown fields are skipped.
        assert_eq!(message_status(framed(&[0x12, 0x02, b'h', b'i', 0x08, 0x01])), Some(1));
        assert_eq!(message_status(framed(&[0x08])), None, "truncated varint");
        assert_eq!(message_status(Bytes::from_static(&[1, 0, 0, 0, 0])), None, "compressed");
        assert_eq!(message_status(Bytes::from_static(&[0, 0, 0, 0, 9, 8])), None, "short");
    }
}
