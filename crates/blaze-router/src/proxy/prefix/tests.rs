use serde_json::json;

use super::prefix_key;

const MAX: usize = 256;

fn key(body: &serde_json::Value) -> Vec<u8> {
    prefix_key(body.to_string().as_bytes(), MAX)
}

fn chat(model: &str, messages: serde_json::Value) -> Vec<u8> {
    key(&json!({"model": model, "messages": messages, "stream": true}))
}

fn system_then_user(system: &str, user: &str) -> Vec<u8> {
    chat("m", json!([{"role": "system", "content": system}, {"role": "user", "content": user}]))
}

#[test]
fn conversations_sharing_a_system_prompt_share_a_key() {
    let a = system_then_user("You are a terse assistant.", "What is Rust?");
    let b = system_then_user("You are a terse assistant.", "Write a haiku about\nautumn.");
    let long = chat(
        "m",
        json!([
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": 42},
        ]),
    );
    assert_eq!(a, b);
    assert_eq!(a, long);
    assert_eq!(a, b"m\0system\0You are a terse assistant.\0");
}

#[test]
fn different_system_prompts_give_different_keys() {
    let a = system_then_user("You are a terse assistant.", "What is Rust?");
    let b = system_then_user("You are a pirate.", "What is Rust?");
    assert_ne!(a, b);
}

#[test]
fn the_whole_leading_run_of_system_and_developer_messages_counts() {
    let run = |second: &str| {
        chat(
            "m",
            json!([
                {"role": "system", "content": "Be kind."},
                {"role": "developer", "content": second},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "a system message later on is not part of it"},
            ]),
        )
    };
    assert_ne!(run("Answer in French."), run("Answer in German."));
    assert_eq!(run("Answer in French."), b"m\0system\0Be kind.\0developer\0Answer in French.\0");
}

#[test]
fn without_a_system_message_the_first_message_is_the_key() {
    let first = |user: &str, second: &str| {
        chat(
            "m",
            json!([
                {"role": "user", "content": user},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": second},
            ]),
        )
    };
    assert_eq!(
        first("Summarise this document: ...", "Shorter"),
        b"m\0user\0Summarise this document: ...\0"
    );
    assert_eq!(
        first("Summarise this document: ...", "Shorter"),
        first("Summarise this document: ...", "Longer")
    );
    assert_ne!(
        first("Summarise this document: ...", "Shorter"),
        first("Translate this: ...", "Shorter")
    );
    // The role counts: a user turn saying what a system prompt says is a different prompt.
    assert_ne!(
        chat("m", json!([{"role": "user", "content": "Be kind."}])),
        chat("m", json!([{"role": "system", "content": "Be kind."}]))
    );
}

#[test]
fn string_content_and_text_parts_are_the_same_prompt() {
    let text = system_then_user("You are a terse assistant.", "hi");
    let parts = chat(
        "m",
        json!([
            {"role": "system", "content": [
                {"type": "text", "text": "You are "},
                {"type": "text", "text": "a terse assistant."},
            ]},
            {"role": "user", "content": [{"type": "text", "text": "other"}]},
        ]),
    );
    assert_eq!(text, parts);
}

#[test]
fn the_model_is_part_of_the_key() {
    let messages =
        json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]);
    assert_ne!(chat("llama-3-8b", messages.clone()), chat("qwen3-8b", messages.clone()));
    let prompt = |model: &str| key(&json!({"model": model, "prompt": "Once upon a time"}));
    assert_ne!(prompt("llama-3-8b"), prompt("qwen3-8b"));
    // The model counts however long the prompt.
    let long = "x".repeat(4 * MAX);
    assert_ne!(
        key(&json!({"model": "a", "prompt": long})),
        key(&json!({"model": "b", "prompt": long}))
    );
}

#[test]
fn the_prompt_part_is_capped_at_prefix_bytes() {
    let system = "You are a helpful assistant. ".repeat(20);
    let a = system_then_user(&system, "one");
    let b = system_then_user(&format!("{system}And more."), "two");
    assert_eq!(a, b, "only the first {MAX} bytes count");
    assert_eq!(a.len(), "m\0".len() + MAX);
    let cut = |max| {
        prefix_key(br#"{"model":"m","messages":[{"role":"system","content":"Be kind."}]}"#, max)
    };
    assert_eq!(cut(9), b"m\0system\0Be");
    assert_eq!(cut(0), b"m\0");
}

#[test]
fn completions_key_on_the_first_prompt() {
    let p = |prompt: serde_json::Value| key(&json!({"prompt": prompt, "model": "m"}));
    assert_eq!(p(json!("Once upon a time")), b"m\0Once upon a time");
    assert_eq!(p(json!(["Once upon a time", "Twice"])), b"m\0Once upon a time");
    assert_eq!(p(json!([1, 22, 333])), b"m\x001 22 333");
    assert_eq!(p(json!([[1, 22, 333], [4, 5]])), b"m\x001 22 333");
    assert_ne!(p(json!([1, 22, 333])), p(json!([1, 22, 334])));
    // Token ids are capped as their text is.
    let many: Vec<u64> = (0..1_000).collect();
    let tokens = p(json!(many));
    assert_eq!(tokens.len(), "m\0".len() + MAX);
    assert_eq!(tokens, p(json!([many, [7]])));
    let long = "é".repeat(MAX);
    assert_eq!(p(json!(long)), [b"m\0", &long.as_bytes()[..MAX]].concat());
}

#[test]
fn bodies_that_are_not_understood_fall_back_to_their_first_bytes() {
    let raw = |body: &[u8], max| prefix_key(body, max);
    assert_eq!(raw(b"not json at all", 3), b"not");
    assert_eq!(
        raw(br#"{"model":"m","messages":[{"role":"system","content":"trunc"#, 9),
        br#"{"model":"#
    );
    // Understood as JSON, but without a prompt this router knows how to read.
    assert_eq!(raw(br#"{"input":"embed me"}"#, 100), br#"{"input":"embed me"}"#);
    assert_eq!(raw(br#"{"messages":[]}"#, 100), br#"{"messages":[]}"#);
    assert_eq!(raw(br#"{"prompt":[]}"#, 100), br#"{"prompt":[]}"#);
    assert_eq!(raw(br#"{"messages":"hi"}"#, 100), br#"{"messages":"hi"}"#);
    assert_eq!(raw(br#"{"messages":[{"content":"no role"}]}"#, 8), br#"{"messag"#);
    assert_eq!(raw(br#"{"prompt":[1.5]}"#, 100), br#"{"prompt":[1.5]}"#);
    assert_eq!(raw(br#"["prompt"]"#, 100), br#"["prompt"]"#);
    assert_eq!(raw(br#"{"prompt":"a"} trailing"#, 100), br#"{"prompt":"a"} trailing"#);
}

#[test]
fn escaped_and_plain_strings_read_alike() {
    let plain =
        prefix_key(br#"{"model":"m","messages":[{"role":"system","content":"Be kind."}]}"#, MAX);
    let escaped = prefix_key(
        br#"{"model":"\u006d","messages":[{"role":"sys\u0074em","content":"Be \u006bind."}]}"#,
        MAX,
    );
    assert_eq!(plain, escaped);
}

fn oip(tensors: serde_json::Value) -> Vec<u8> {
    key(&json!({"id": "req-1", "inputs": tensors, "parameters": {"max_tokens": 8}}))
}

/// A generate request in the Open Inference Protocol keys as a completion of its prompt,
/// whatever the order of its tensors' fields, the shape of its data or the other inputs.
#[test]
fn an_open_inference_protocol_prompt_keys_as_a_completion() {
    let completion = key(&json!({"prompt": "You are terse. Hi"}));
    for tensors in [
        json!([{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["You are terse. Hi"]}]),
        json!([{"data": [["You are terse. Hi"]], "shape": [1, 1], "name": "text_input"}]),
        json!([
            {"name": "stream", "datatype": "BOOL", "shape": [1], "data": [false]},
            {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["You are terse. Hi"]},
        ]),
    ] {
        assert_eq!(oip(tensors.clone()), completion, "{tensors}");
    }
    let other = oip(json!([{"name": "text_input", "data": ["You are kind. Hi"]}]));
    assert_ne!(other, completion);
}

/// Without a `text_input` (an embedding request), the body's first bytes are the key.
#[test]
fn other_inference_requests_key_by_their_first_bytes() {
    let body = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]});
    let text = body.to_string();
    assert_eq!(key(&body), text.as_bytes());
    let numbers = json!({"inputs": [{"name": "text_input", "data": [1, 2]}]});
    assert_eq!(key(&numbers), numbers.to_string().as_bytes());
}
