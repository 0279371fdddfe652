use super::*;

fn parse_body(
    json: &str,
    binary: &[u8],
    with_length: bool,
) -> Result<(InferRequest, Binary), OipError> {
    let mut headers = HeaderMap::new();
    if with_length {
        headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
    }
    let body = [json.as_bytes(), binary].concat();
    parse(&headers, Bytes::from(body), "m".into(), String::new())
}

fn field_of(e: OipError) -> String {
    let OipError::Invalid(m) = e else { panic!("not Invalid: {e:?}") };
    m.split_once(": ").map(|(f, _)| f.to_owned()).unwrap_or(m)
}

#[test]
fn json_data_is_flattened_row_major() {
    let body = r#"{"id": "7", "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES",
        "data": [["a"], ["b"]]}], "outputs": [{"name": "embedding"}]}"#;
    let (r, binary) = parse_body(body, b"", false).unwrap();
    assert_eq!((r.id.as_str(), r.model.as_str()), ("7", "m"));
    assert_eq!(r.inputs[0].elements, Elements::Bytes(vec![b"a".to_vec(), b"b".to_vec()]));
    assert_eq!(r.inputs[0].source, "inputs[0].data");
    assert_eq!(r.outputs, [RequestedOutput { name: "embedding".into() }]);
    assert_eq!(binary, Binary::default());
}

/// As tritonclient writes it: the JSON, then each binary input's bytes in order.
#[test]
fn binary_tensor_data_follows_the_json() {
    let body = r#"{"inputs": [
        {"name": "a", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
        {"name": "b", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": 1}}],
        "outputs": [{"name": "x", "parameters": {"binary_data": false}}],
        "parameters": {"binary_data_output": true}}"#;
    let tail = [2, 0, 0, 0, b'h', b'i', 1];
    let (r, binary) = parse_body(body, &tail, true).unwrap();
    assert_eq!(r.inputs[0].elements, Elements::Raw(Bytes::from_static(&[2, 0, 0, 0, b'h', b'i'])));
    assert_eq!(r.inputs[0].texts(0, true).unwrap(), ["hi"]);
    assert_eq!(r.inputs[1].elements, Elements::Raw(Bytes::from_static(&[1])));
    assert!(binary.of("y") && !binary.of("x"));

    let e = parse_body(body, &tail[..6], true).unwrap_err();
    assert_eq!(field_of(e), "inputs[1].parameters.binary_data_size");
    let e = parse_body(body, &[tail.as_slice(), &[0]].concat(), true).unwrap_err();
    assert_eq!(field_of(e), "inputs");
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_LENGTH, HeaderValue::from(10_000));
    let e = parse(&headers, Bytes::from_static(b"{}"), "m".into(), String::new()).unwrap_err();
    assert_eq!(field_of(e), "Inference-Header-Content-Length");
}

#[test]
fn malformed_bodies_name_the_field() {
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        (r#"{}"#, "inputs"),
        (r#"{"inputs": [3]}"#, "inputs[0]"),
        (r#"{"inputs": [{"shape": [1], "datatype": "BYTES"}]}"#, "inputs[0].name"),
        (r#"{"inputs": [{"name": "t", "shape": [1]}]}"#, "inputs[0].datatype"),
        (r#"{"inputs": [{"name": "t", "shape": "1", "datatype": "BYTES"}]}"#, "inputs[0].shape"),
        (
            r#"{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [1]}]}"#,
            "inputs[0].data",
        ),
        (r#"{"inputs": [], "outputs": [{}]}"#, "outputs[0].name"),
        (r#"{"inputs": [], "id": 3}"#, "id"),
        (r#"{"inputs": [], "parameters": [1]}"#, "parameters"),
    ] {
        assert_eq!(field_of(parse_body(body, b"", false).unwrap_err()), field, "{body}");
    }
}

async fn body_of(r: Response) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = r.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(body, usize::MAX).await.unwrap())
}

#[tokio::test]
async fn answers_are_json_or_json_then_binary() {
    let answer = || InferResponse {
        model: "m".into(),
        id: String::new(),
        outputs: vec![Output {
            name: "embedding",
            shape: vec![1, 2],
            data: OutputData::Fp32(vec![0.5, -1.0]),
        }],
    };
    let (status, headers, body) = body_of(respond(answer(), &Binary::default())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(HEADER_LENGTH).is_none());
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let want = json!({"model_name": "m", "outputs": [
        {"name": "embedding", "datatype": "FP32", "shape": [1, 2], "data": [0.5, -1.0]}]});
    assert_eq!(doc, want);

    let binary = Binary { default: true, outputs: Vec::new() };
    let (_, headers, body) = body_of(respond(answer(), &binary)).await;
    let n: usize = headers[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
    let doc: Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(doc["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(&body[n..], [0, 0, 0, 0x3f, 0, 0, 0x80, 0xbf]);
}

#[tokio::test]
async fn errors_are_the_protocol_s_json_with_their_status() {
    for (e, status) in [
        (OipError::invalid("inputs", "x"), StatusCode::BAD_REQUEST),
        (OipError::NotFound("x".into()), StatusCode::NOT_FOUND),
        (OipError::Unavailable("x".into()), StatusCode::SERVICE_UNAVAILABLE),
        (OipError::Exhausted("x".into()), StatusCode::TOO_MANY_REQUESTS),
    ] {
        let message = e.to_string();
        let (got, _, body) = body_of(error(e)).await;
        assert_eq!(got, status);
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"error": message}));
    }
}
