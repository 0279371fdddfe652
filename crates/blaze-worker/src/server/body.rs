//! Reading a request body with a size limit, answering 413 in a way a client that reuses
//! connections can rely on.
//!
//! A server that answers 413 without reading the rest of the body must close the
//! connection (the unread bytes would be taken for the next request), and a pooled client
//! that sends its next request on that connection races with the close. So a body over the
//! limit is read to its end and dropped, up to [`DRAIN_MAX_BYTES`] more, and the connection
//! stays usable; a body larger than that, or one declared larger, gets the 413 with
//! `Connection: close`, which tells the client not to reuse the connection.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::MAX_BODY_BYTES;
use super::error::ApiError;

/// Bytes past the limit read and dropped so the connection can serve the next request.
/// Reading them costs less than a new connection up to a few MiB on any network.
pub const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Longest time spent draining; a client sending slower than this is cut off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to `request`: what `serve` makes of its body (read as [`read_limited`] reads
/// it), its error as a response, or the response to a body that cannot be read.
pub(super) async fn with_body<E: IntoResponse>(
    request: Request,
    serve: impl AsyncFnOnce(Bytes) -> Result<Response, E>,
) -> Response {
    match read_limited(request).await {
        Ok(body) => serve(body).await.unwrap_or_else(IntoResponse::into_response),
        Err(response) => response,
    }
}

/// The body of `request`, or the response to send when it cannot be read or is too large.
pub(super) async fn read_limited(request: Request) -> Result<Bytes, Response> {
    let version = request.version();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES + DRAIN_MAX_BYTES) {
        return Err(too_large(version, false));
    }
    let mut stream = request.into_body().into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY_BYTES));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}")).into_response()
        })?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            let seen = buf.len() + chunk.len();
            drop(buf);
            let drained =
                tokio::time::timeout(DRAIN_TIMEOUT, drain(stream, seen)).await.unwrap_or(false);
            return Err(too_large(version, drained));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops the rest of a body; true when it ended within the drain allowance.
async fn drain(mut stream: axum::body::BodyDataStream, mut seen: usize) -> bool {
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return false };
        seen += chunk.len();
        if seen > MAX_BODY_BYTES + DRAIN_MAX_BYTES {
            return false;
        }
    }
    true
}

fn too_large(version: Version, drained: bool) -> Response {
    let message = format!("the request body is larger than {MAX_BODY_BYTES} bytes");
    let mut response = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    // HTTP/2 has no Connection header: each request is a stream, reset on its own.
    if !drained && version <= Version::HTTP_11 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(body: Body, length: Option<usize>) -> Request {
        let mut builder = Request::builder().method("POST").uri("/v1/completions");
        if let Some(n) = length {
            builder = builder.header(header::CONTENT_LENGTH, n);
        }
        builder.body(body).unwrap()
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let body = read_limited(request(Body::from("{}"), Some(2))).await.unwrap();
        assert_eq!(&body[..], b"{}");
        assert!(read_limited(request(Body::empty(), None)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_just_over_the_limit_is_drained_and_the_connection_kept() {
        let huge = vec![b'a'; MAX_BODY_BYTES + 1];
        let r = read_limited(request(Body::from(huge), None)).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn a_body_declared_far_over_the_limit_closes_the_connection() {
        let declared = MAX_BODY_BYTES + DRAIN_MAX_BYTES + 1;
        let r = read_limited(request(Body::empty(), Some(declared))).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}
