use serde_json::json;

use super::params::{self, Param, Params};
use super::tensor::{Elements, Input, Output, OutputData, split_bytes};
use super::*;

fn input(datatype: &str, shape: &[i64], elements: Elements) -> Input {
    Input {
        name: "text".into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        elements,
        source: "inputs[0].data".into(),
    }
}

fn raw_bytes(items: &[&str]) -> bytes::Bytes {
    let output = Output {
        name: "x",
        shape: vec![items.len() as i64],
        data: OutputData::Bytes(items.iter().map(|s| s.as_bytes().to_vec()).collect()),
    };
    output.raw().into()
}

/// The message of an `Invalid`, which must start with `field`.
fn invalid(result: Result<impl std::fmt::Debug, OipError>, field: &str) -> String {
    match result {
        Err(OipError::Invalid(message)) => {
            assert!(message.starts_with(&format!("{field}: ")), "{message} names not {field}");
            message
        }
        other => panic!("expected Invalid about {field}, got {other:?}"),
    }
}

#[test]
fn texts_come_listed_or_raw_in_either_shape() {
    let listed = Elements::Bytes(vec![b"a".to_vec(), "é".as_bytes().to_vec()]);
    for shape in [&[2][..], &[2, 1]] {
        assert_eq!(input("BYTES", shape, listed.clone()).texts(0, false).unwrap(), ["a", "é"]);
    }
    let raw = Elements::Raw(raw_bytes(&["first", "", "third"]));
    assert_eq!(input("BYTES", &[3], raw).texts(0, false).unwrap(), ["first", "", "third"]);
}

#[test]
fn malformed_tensors_name_the_field() {
    let two = || Elements::Bytes(vec![b"a".to_vec(), b"b".to_vec()]);
    let m = invalid(input("FP32", &[2], two()).texts(0, false), "inputs[0].datatype");
    assert!(m.contains("\"FP32\"") && m.contains("BYTES"), "{m}");
    for shape in [&[3][..], &[1, 2], &[2, 2], &[0], &[-1], &[], &[2, 1, 1]] {
        let result = input("BYTES", shape, two()).texts(0, false);
        if shape == [3] {
            let m = invalid(result, "inputs[0].data");
            assert!(m.contains("2 elements") && m.contains("says 3"), "{m}");
        } else {
            invalid(result, "inputs[0].shape");
        }
    }
    invalid(input("BYTES", &[2], two()).texts(0, true), "inputs[0].shape");
    invalid(input("BYTES", &[1], Elements::Missing).texts(0, false), "inputs[0]");
    invalid(input("BYTES", &[1], Elements::Numbers(1)).texts(0, false), "inputs[0].data");
    let bad_utf8 = Elements::Bytes(vec![vec![0xff, 0xfe]]);
    let m = invalid(input("BYTES", &[1], bad_utf8).texts(0, false), "inputs[0].data");
    assert!(m.contains("element 0 is not UTF-8"), "{m}");
}

#[test]
fn raw_bytes_with_bad_lengths_are_refused_with_where() {
    assert_eq!(
        split_bytes(&raw_bytes(&["ab", "c"]), "r").unwrap(),
        [b"ab".to_vec(), b"c".to_vec()]
    );
    let mut long = raw_bytes(&["ab"]).to_vec();
    long[0] = 9;
    let m = invalid(split_bytes(&long, "raw_input_contents[0]"), "raw_input_contents[0]");
    assert!(m.contains("element 0 says it has 9 bytes, but only 2 remain"), "{m}");
    let mut short = raw_bytes(&["ab"]).to_vec();
    short.extend_from_slice(&[1, 0]);
    let m = invalid(split_bytes(&short, "raw_input_contents[0]"), "raw_input_contents[0]");
    assert!(m.contains("element 1 starts with 2 bytes"), "{m}");
}

#[test]
fn flags_are_one_bool() {
    let flag = |elements| {
        let mut i = input("BOOL", &[1], elements);
        i.name = "stream".into();
        i.flag(3)
    };
    assert!(flag(Elements::Bools(vec![true])).unwrap());
    assert!(!flag(Elements::Raw(bytes::Bytes::from_static(&[0]))).unwrap());
    invalid(flag(Elements::Bools(vec![true, false])), "inputs[0].data");
    let mut bytes = input("BYTES", &[1], Elements::Bytes(vec![b"x".to_vec()]));
    bytes.name = "stream".into();
    invalid(bytes.flag(3), "inputs[3].datatype");
}

#[test]
fn outputs_are_little_endian_and_length_prefixed() {
    let fp32 =
        Output { name: "embedding", shape: vec![1, 2], data: OutputData::Fp32(vec![1.0, -2.5]) };
    assert_eq!(fp32.raw(), [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    assert_eq!(fp32.datatype(), "FP32");
    let text = Output { name: "t", shape: vec![1], data: OutputData::Bytes(vec![b"hi".to_vec()]) };
    assert_eq!(text.raw(), [2, 0, 0, 0, b'h', b'i']);
}

#[test]
fn sampling_takes_vllm_s_names_as_numbers_or_strings() {
    let params = params::from_json(
        &json!({
            "max_tokens": 7, "temperature": "0.5", "top_p": 0.9, "top_k": -1, "seed": 42,
            "stop": ["\n", "END"], "binary_data_output": true, "priority": 0,
        }),
        "parameters",
    )
    .unwrap();
    let g = params::generation(&params, "parameters").unwrap();
    assert_eq!(g.max_tokens, Some(7));
    assert_eq!((g.sampling.temperature, g.sampling.top_p, g.sampling.top_k), (0.5, 0.9, 0));
    assert_eq!(
        (g.sampling.seed, g.stop.as_slice()),
        (Some(42), &["\n".to_owned(), "END".into()][..])
    );
    let defaults = params::generation(&Params::new(), "parameters").unwrap();
    assert_eq!((defaults.max_tokens, defaults.sampling.temperature), (None, 1.0));
    let one: Params = [("stop".to_owned(), Param::Str("###".into()))].into();
    assert_eq!(params::generation(&one, "parameters").unwrap().stop, ["###"]);
    let listed: Params = [("stop".to_owned(), Param::Str("[\"a\", \"b\"]".into()))].into();
    assert_eq!(params::generation(&listed, "parameters").unwrap().stop, ["a", "b"]);
}

#[test]
fn bad_sampling_parameters_are_named() {
    for (body, field) in [
        (json!({"temperature": 3}), "parameters.temperature"),
        (json!({"temperature": "hot"}), "parameters.temperature"),
        (json!({"top_p": 0}), "parameters.top_p"),
        (json!({"top_k": -2}), "parameters.top_k"),
        (json!({"max_tokens": 0}), "parameters.max_tokens"),
        (json!({"max_tokens": 1.5}), "parameters.max_tokens"),
        (json!({"seed": true}), "parameters.seed"),
        (json!({"stop": 3}), "parameters.stop"),
        (json!({"stop": "[1, 2]"}), "parameters.stop"),
    ] {
        let params = params::from_json(&body, "parameters").unwrap();
        invalid(params::generation(&params, "parameters"), field);
    }
    invalid(params::from_json(&json!([1]), "parameters"), "parameters");
}

#[test]
fn errors_map_to_the_protocol_s_kinds() {
    let queue = OipError::submit(SubmitError::QueueFull(4), "inputs[0]");
    assert!(matches!(queue, OipError::Exhausted(_)));
    let input = SubmitError::Invalid { field: "input", message: "input[1] has 300 tokens".into() };
    assert_eq!(
        OipError::submit(input, "inputs[0]"),
        OipError::Invalid("inputs[0]: input[1] has 300 tokens".into())
    );
    let dims = SubmitError::Invalid { field: "dimensions", message: "8: too few".into() };
    assert_eq!(
        OipError::submit(dims, "inputs[0]"),
        OipError::Invalid("parameters.dimensions: 8: too few".into())
    );
    let failed = OipError::from(EngineError::Failed("stalled".into()));
    assert!(matches!(failed, OipError::Unavailable(_)));
    assert_eq!(
        OipError::invalid("inputs[0]", "too long").in_element(2),
        OipError::Invalid("inputs[0]: element 2: too long".into())
    );
}
