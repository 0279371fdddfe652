use proptest::prelude::*;

use super::*;

#[test]
fn chat_request_parses_with_openai_defaults() {
    let p = parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
    assert_eq!(p.prompt, Prompt::Chat(vec![Message { role: "user".into(), content: "Hi".into() }]));
    assert_eq!(p.common.sampling.temperature, 1.0);
    assert!(!p.common.stream && !p.common.sampling.ignore_eos);
    let p = parse_completion(br#"{"prompt":"x","ignore_eos":true}"#).unwrap();
    assert!(p.common.sampling.ignore_eos);
}

#[test]
fn errors_name_the_bad_field() {
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "body"),
        (br#"{"prompt":"x","temperature":9}"#, "temperature"),
        (br#"{"prompt":"x","top_p":0}"#, "top_p"),
        (br#"{"prompt":"x","max_tokens":-1}"#, "max_tokens"),
        (br#"{"prompt":"x","max_tokens":0}"#, "max_tokens"),
        (br#"{"prompt":"x","stop":[1]}"#, "stop"),
        (br#"{"prompt":"x","n":3}"#, "n"),
        (br#"{"prompt":7}"#, "prompt"),
        (br#"{"prompt":"x","presence_penalty":"a"}"#, "presence_penalty"),
        (br#"{"prompt":"x","ignore_eos":1}"#, "ignore_eos"),
        (br#"{"prompt":"x","stream":"yes"}"#, "stream"),
    ];
    for (body, field) in cases {
        let e = parse_completion(body).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some(*field), "{}", String::from_utf8_lossy(body));
        assert!(e.message.starts_with(field), "{}", e.message);
    }
    let e = parse_chat(br#"{"messages":[{"content":"x"}]}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    let chat = br#"{"messages":[{"role":"user","content":"x"}],"logprobs":1}"#;
    let e = parse_chat(chat).unwrap_err();
    assert_eq!(
        (e.param.as_deref(), e.message.as_str()),
        (Some("logprobs"), "logprobs: must be a boolean")
    );
}

proptest! {
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_completion(&body);
        let _ = parse_chat(&body);
    }

    #[test]
    fn arbitrary_json_values_never_panic(
        temperature in any::<f64>(), max in any::<i64>(), top_k in any::<i64>(), stop in ".*",
    ) {
        let body = serde_json::json!({
            "prompt": "x", "messages": [{"role": "user", "content": stop}],
            "temperature": temperature, "max_tokens": max, "top_k": top_k, "stop": stop,
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let _ = parse_completion(&bytes);
        let _ = parse_chat(&bytes);
    }
}
