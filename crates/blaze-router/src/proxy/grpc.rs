//! Which gRPC calls the proxy may read in full before sending, so that a failed try can be
//! sent again: those whose request is one message (unary and server-streaming methods).
//!
//! A gRPC request has no `content-length`, so without this table its body would be streamed
//! and tried once. The client of a one-message call ends its stream right after the message,
//! so reading it whole costs no wait; a client-streaming or bidirectional call may wait for
//! the server before it sends more (reading it whole would stall it), so methods not listed
//! here stream as before. The methods of Blaze's own protos are listed, checked against
//! `crates/blaze-proto/proto/` by a test, with `grpc.health.v1.Health/Check`.
//!
//! Every listed method may be retried on another endpoint until the first byte of the
//! answer, as any buffered HTTP request: the Open Inference Protocol's `ServerLive`,
//! `ServerReady`, `ModelReady`, `ServerMetadata` and `ModelMetadata` are reads, and an
//! inference (`ModelInfer`, `GenerateStream`) has no effect beyond its answer, which the
//! client has not seen any of.

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// Services whose every method takes one request message, by their full name.
const ONE_MESSAGE_SERVICES: [&str; 2] =
    ["inference.GRPCInferenceService", "blaze.generate.v1.Generate"];

/// Single methods elsewhere that take one request message.
const ONE_MESSAGE_METHODS: [&str; 1] = ["/grpc.health.v1.Health/Check"];

/// Whether the request is a gRPC call (`application/grpc`, `application/grpc+proto`, ...).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"))
}

/// Whether `path` (`/package.Service/Method`) names a method whose request is one message.
pub(super) fn one_message(path: &str) -> bool {
    if ONE_MESSAGE_METHODS.contains(&path) {
        return true;
    }
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    !method.is_empty() && !method.contains('/') && ONE_MESSAGE_SERVICES.contains(&service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_one_message_methods_are_read_whole() {
        for path in [
            "/inference.GRPCInferenceService/ModelInfer",
            "/inference.GRPCInferenceService/ServerLive",
            "/blaze.generate.v1.Generate/GenerateStream",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(one_message(path), "{path}");
        }
        for path in [
            "/grpc.health.v1.Health/Watch",
            "/inference.GRPCInferenceService/",
            "/inference.GRPCInferenceService/ModelInfer/x",
            "/other.Service/ModelInfer",
            "/v2/models/m/infer",
            "inference.GRPCInferenceService/ModelInfer",
        ] {
            assert!(!one_message(path), "{path}");
        }
    }

    /// `service NAME {` blocks of a .proto file with their methods: (full service name,
    /// method, whether the request is a stream).
    fn rpcs(proto: &str) -> Vec<(String, String, bool)> {
        let package = proto
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim_end_matches(';').trim().to_owned())
            .unwrap_or_default();
        let (mut service, mut out) = (String::new(), Vec::new());
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = format!("{package}.{}", rest.trim_end_matches('{').trim());
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let (method, args) = rest.split_once('(').expect("rpc NAME(");
                let streamed = args.trim_start().starts_with("stream ");
                out.push((service.clone(), method.trim().to_owned(), streamed));
            }
        }
        out
    }

    /// The table agrees with the protos: every method of a listed service takes one message,
    /// and every service of Blaze's protos whose methods all do is listed.
    #[test]
    fn the_table_matches_blaze_s_protos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../blaze-proto/proto");
        let mut services = std::collections::BTreeMap::<String, bool>::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let proto = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for (service, method, streamed) in rpcs(&proto) {
                let path = format!("/{service}/{method}");
                assert_eq!(one_message(&path), !streamed, "{path}");
                *services.entry(service).or_insert(true) &= !streamed;
            }
        }
        let listed: Vec<&str> =
            services.iter().filter(|(_, one)| **one).map(|(s, _)| s.as_str()).collect();
        let mut table = ONE_MESSAGE_SERVICES.to_vec();
        table.sort_unstable();
        assert_eq!(listed, table);
    }
}
