//! A local server with the Hugging Face hub's file layout (`/ORG/NAME/resolve/REV/FILE`)
//! serving the files of one folder as `blaze-test/tiny@v1`, with range requests, a request
//! log, a switch that cuts the next download of a file off half way and one that sends it
//! slowly.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// One request the hub saw: the file and the `Range` header, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub file: String,
    pub range: Option<String>,
}

#[derive(Clone, Default)]
struct Shared {
    root: PathBuf,
    hits: Arc<Mutex<Vec<Hit>>>,
    cut_next: Arc<Mutex<Option<String>>>,
    slow_next: Arc<Mutex<Option<(String, std::time::Duration)>>>,
}

/// The running server.
pub struct Hub {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub endpoint: String,
    shared: Shared,
}

impl Hub {
    /// Serves the files under `root` on a free loopback port.
    pub async fn start(root: PathBuf) -> Hub {
        let shared = Shared { root, ..Shared::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/{org}/{name}/resolve/{rev}/{*file}", axum::routing::get(resolve))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hub { endpoint, shared }
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().clone()
    }

    /// The next download of `file` sends half the bytes, then drops the connection.
    pub fn cut_next(&self, file: &str) {
        *self.shared.cut_next.lock() = Some(file.to_string());
    }

    /// The next download of `file` sends it in 12 even parts spread over `over`.
    pub fn slow_next(&self, file: &str, over: std::time::Duration) {
        *self.shared.slow_next.lock() = Some((file.to_string(), over));
    }
}

async fn resolve(
    State(hub): State<Shared>,
    Path((org, name, rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    hub.hits.lock().push(Hit { file: file.clone(), range: range.clone() });
    if org != "blaze-test" || name != "tiny" || rev != "v1" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(bytes) = std::fs::read(hub.root.join(&file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let slow = hub.slow_next.lock().take_if(|(f, _)| *f == file).map(|(_, over)| over);
    if let Some(over) = slow {
        let parts: Vec<Vec<u8>> =
            bytes.chunks(bytes.len().div_ceil(12)).map(<[u8]>::to_vec).collect();
        let pause = over / parts.len() as u32;
        let chunks = async_stream::stream! {
            for part in parts {
                tokio::time::sleep(pause).await;
                yield Ok::<_, std::io::Error>(part);
            }
        };
        let mut response = Body::from_stream(chunks).into_response();
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        return response;
    }
    let cut = {
        let mut next = hub.cut_next.lock();
        let cut = next.as_deref() == Some(file.as_str());
        if cut {
            *next = None;
        }
        cut
    };
    if cut {
        // Half the body; once hyper has flushed it (it does when the body stream is
        // pending), an error, which makes hyper drop the connection mid-response.
        let half = bytes[..bytes.len() / 2].to_vec();
        let chunks = async_stream::stream! {
            yield Ok::<_, std::io::Error>(half);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            yield Err(std::io::Error::other("cut off"));
        };
        let mut response = Body::from_stream(chunks).into_response();
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        return response;
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    match start {
        Some(start) if start >= bytes.len() => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        Some(start) => {
            let content_range = format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len());
            let mut response =
                (StatusCode::PARTIAL_CONTENT, bytes[start..].to_vec()).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).unwrap());
            response
        }
        None => bytes.into_response(),
    }
}
