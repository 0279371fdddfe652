//! Tokenizers from GGUF metadata. SentencePiece (`tokenizer.ggml.model = llama`, as Llama 2,
//! Mistral and Phi-3 files ship) against the `sentencepiece` library's own encodings of a
//! vocabulary it trained (tests/data/spm_reference.json, written by spm_reference.py), and
//! a tiny Phi-3 GGUF with that vocabulary through the production loading path and the
//! worker binary. Byte-level BPE (`gpt2`) splitting words as `tokenizer.ggml.pre` says.

use crate::support::compare;
use crate::support::tiny;
use crate::support::worker as support;

use std::path::Path;

use blaze_worker::chat::Message;
use blaze_worker::model::{KvCache, LoadedModel, Weights};
use blaze_worker::tokenizer::{PromptSpecials, StreamDecoder, Tokenizer};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    tokens: Vec<String>,
    scores: Vec<f32>,
    token_types: Vec<i32>,
    encodings: Vec<Encoding>,
}

#[derive(Deserialize)]
struct Encoding {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("data/spm_reference.json")).unwrap()
}

/// The `tokenizer.*` metadata llama.cpp's converter writes for `f`, plus `extra`.
fn metadata(f: &Fixture, extra: &[(&str, Value)]) -> Vec<(String, Value)> {
    let strings = f.tokens.iter().map(|t| Value::String(t.clone())).collect();
    let mut m = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(strings)),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(f.scores.iter().map(|s| Value::F32(*s)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(f.token_types.iter().map(|t| Value::I32(*t)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ];
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    m
}

/// The tokenizer of a GGUF file holding `metadata` and no tensors.
fn tokenizer(metadata: &[(String, Value)]) -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &refs, &[]).unwrap();
    let content = gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    Tokenizer::from_gguf(&content).unwrap()
}

#[test]
fn encodes_as_the_sentencepiece_library_and_decodes_back() {
    let f = fixture();
    let tok = tokenizer(&metadata(&f, &[]));
    assert_eq!(tok.vocab_size(), f.tokens.len());
    for e in &f.encodings {
        assert_eq!(tok.encode(&e.text).unwrap(), e.ids, "{:?}", e.text);
        // The space SentencePiece puts in front of the text comes back: decoded text
        // continues what came before it.
        let expected = if e.text.is_empty() { String::new() } else { format!(" {}", e.text) };
        assert_eq!(tok.decode(&e.ids).unwrap(), expected, "{:?}", e.text);
    }
    // Newlines and characters outside the vocabulary are byte tokens.
    let newline = tok.token_id("<0x0A>").unwrap();
    assert!(tok.encode("a\nb").unwrap().contains(&newline));
    let emoji: Vec<u32> = [0xF0u8, 0x9F, 0x99, 0x82]
        .iter()
        .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    assert!(tok.encode("🙂").unwrap().ends_with(&emoji));
}

#[test]
fn streamed_pieces_are_whole_characters() {
    let f = fixture();
    let tok = tokenizer(&metadata(&f, &[]));
    let text = "unicode: café, naïve, 東京, emoji 🙂!\n  two lines";
    let mut d = StreamDecoder::default();
    let pieces: Vec<String> =
        tok.encode(text).unwrap().iter().map(|id| d.push(&tok, *id).unwrap()).collect();
    assert_eq!(pieces.concat(), format!(" {text}"));
    assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
}

#[test]
fn special_tokens_are_matched_whole_and_control_ones_left_out_of_text() {
    let mut f = fixture();
    // A user-defined token, as chat models add them.
    f.tokens.push("<|user|>".into());
    f.scores.push(0.0);
    f.token_types.push(4);
    let user = f.tokens.len() as u32 - 1;
    let tok = tokenizer(&metadata(&f, &[]));
    let hello = tok.encode("Hello").unwrap();
    // As llama.cpp: text after a special token starts a new word (`▁` in front).
    let expected: Vec<u32> = [1].into_iter().chain(hello.iter().copied()).chain([2]).collect();
    assert_eq!(tok.encode("<s>Hello</s>").unwrap(), expected);
    assert_eq!(tok.decode(&expected).unwrap(), " Hello");
    let ids = tok.encode("<|user|>\nHi").unwrap();
    assert_eq!(ids[0], user);
    assert_eq!(ids[1..], tok.encode("\nHi").unwrap()[..]);
    // User-defined tokens are text; control tokens are not.
    assert_eq!(tok.decode(&ids).unwrap(), "<|user|> \nHi");
}

#[test]
fn bos_and_eos_follow_the_file_flags() {
    let f = fixture();
    let specials = |extra: &[(&str, Value)]| tokenizer(&metadata(&f, extra)).prompt_specials();
    // SentencePiece vocabularies want BOS unless the file says otherwise.
    assert_eq!(specials(&[]), PromptSpecials { bos: Some(1), eos: None });
    let no_bos = [("tokenizer.ggml.add_bos_token", Value::Bool(false))];
    assert_eq!(specials(&no_bos), PromptSpecials { bos: None, eos: None });
    let eos = [("tokenizer.ggml.add_eos_token", Value::Bool(true))];
    assert_eq!(specials(&eos), PromptSpecials { bos: Some(1), eos: Some(2) });
}

#[test]
fn without_a_space_prefix_the_first_word_stays_bare() {
    let f = fixture();
    let tok = tokenizer(&metadata(&f, &[("tokenizer.ggml.add_space_prefix", Value::Bool(false))]));
    let ids = tok.encode("Hello world").unwrap();
    assert!(!tok.id_token(ids[0]).unwrap().starts_with('\u{2581}'), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
    let with_prefix = tokenizer(&metadata(&f, &[])).encode("Hello world").unwrap();
    assert_ne!(ids, with_prefix);
}

/// Phi-3's chat tokens, as llama.cpp's converter types them (user-defined, control).
const CHAT_TOKENS: [(&str, i32); 3] = [("<|user|>", 4), ("<|assistant|>", 4), ("<|end|>", 3)];

/// A Phi-3-style chat template, written for these tests.
const CHAT_TEMPLATE: &str = "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] \
    + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// The fixture's vocabulary plus [`CHAT_TOKENS`].
fn chat_fixture() -> Fixture {
    let mut f = fixture();
    for (token, ty) in CHAT_TOKENS {
        f.tokens.push(token.into());
        f.scores.push(0.0);
        f.token_types.push(ty);
    }
    f
}

/// Writes a tiny Phi-3 GGUF whose tokenizer is the fixture's SentencePiece vocabulary with
/// Phi-3's chat tokens and a chat template.
fn write_phi3_with_sentencepiece(path: &Path) {
    let f = chat_fixture();
    tiny::write_gguf(path, "phi3", GgmlDType::Q8_0);
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let vocab = f.tokens.len();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in content.tensor_infos.keys() {
        let t = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let t = if name == "token_embd.weight" || name == "output.weight" {
            let hidden = t.shape().dims2().unwrap().1;
            let w = (Tensor::randn(0f32, 1f32, (vocab, hidden), &Device::Cpu).unwrap() * 0.125)
                .unwrap();
            QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()
        } else {
            t
        };
        tensors.push((name.clone(), t));
    }
    let mut meta: Vec<(String, Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.extend(metadata(
        &f,
        &[
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.chat_template", Value::String(CHAT_TEMPLATE.into())),
        ],
    ));
    drop(file);
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &meta, &tensors).unwrap();
}

/// Greedy completion of `prompt` as the worker streams it: up to `max` tokens, stopping at
/// an EOS token, text joined from the stream decoder's pieces. Also returns the smallest gap
/// between the best and second-best logit over the steps: random weights can make a near tie
/// that the worker's batched forward pass, rounding differently, breaks the other way.
fn greedy(model: &LoadedModel, prompt: &str, max: usize) -> (String, usize, f32) {
    let mut cache = KvCache::default();
    let mut input = model.encode_prompt(prompt).unwrap();
    let mut decoder = StreamDecoder::default();
    let mut text = String::new();
    let mut margin = f32::INFINITY;
    for generated in 1..=max {
        let logits = model.llama.forward_one(&input, &mut cache).unwrap().to_vec1::<f32>();
        let logits = logits.unwrap();
        let token = compare::argmax(&logits);
        let best = logits[token as usize];
        let second = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != token as usize)
            .map(|(_, l)| *l)
            .fold(f32::NEG_INFINITY, f32::max);
        margin = margin.min(best - second);
        if model.eos_ids.contains(&token) {
            text.push_str(&decoder.finish(&model.tokenizer).unwrap());
            return (text, generated, margin);
        }
        text.push_str(&decoder.push(&model.tokenizer, token).unwrap());
        input = vec![token];
    }
    text.push_str(&decoder.finish(&model.tokenizer).unwrap());
    (text, max, margin)
}

#[tokio::test]
async fn a_phi3_gguf_with_a_sentencepiece_vocabulary_loads_generates_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi3-spm.gguf");
    let prompt = "Hello world\n  café 🙂";
    // Random weights: write them again until greedy decoding runs past EOS for all 8
    // tokens, so that the served text below has something to compare, with no near tie
    // between two tokens that rounding could break either way.
    let mut tries = 0;
    let (model, text) = loop {
        write_phi3_with_sentencepiece(&path);
        // f32 weights here and in the worker: batch-invariant kernels, so the worker's
        // batched steps compute what `forward_one` does (`dual`, the default for a model this
        // small, quantizes activations in one-row steps only).
        let model = compare::load_uri(&path, Weights::F32);
        let (text, tokens, margin) = greedy(&model, prompt, 8);
        tries += 1;
        if tokens == 8 && !text.is_empty() && margin > 1e-3 {
            break (model, text);
        }
        assert!(tries < 20, "greedy decoding keeps stopping early or meeting near ties");
    };
    let ids = model.encode_prompt(prompt).unwrap();
    let f = chat_fixture();
    let spm = tokenizer(&metadata(&f, &[])).encode(prompt).unwrap();
    assert_eq!(ids, [[1].as_slice(), &spm].concat(), "BOS, then the SentencePiece encoding");
    let chat_id = |t: &str| model.tokenizer.token_id(t).unwrap();
    let (user, assistant, end) =
        (chat_id("<|user|>"), chat_id("<|assistant|>"), chat_id("<|end|>"));
    assert_eq!(model.eos_ids, [2, end], "EOS and Phi-3's end of turn");
    let messages = [Message { role: "user".into(), content: "Hi there".into() }];
    let chat = model.tokenizer.encode(&model.chat.render(&messages).unwrap()).unwrap();
    let hi = model.tokenizer.encode("\nHi there").unwrap();
    let newline = model.tokenizer.encode("\n").unwrap();
    let expected = [[user].as_slice(), &hi, &[end], &newline, &[assistant], &newline].concat();
    assert_eq!(chat, expected, "chat tokens whole, text after them as new words");

    let uri = format!("file://{}", path.display());
    let args = ["--model", uri.as_str(), "--served-model-name", "tiny", "--weights", "f32"];
    let worker = support::Worker::start(&args, std::time::Duration::from_secs(60)).await;
    let body = serde_json::json!({
        "model": "tiny", "prompt": prompt, "max_tokens": 8, "temperature": 0,
    });
    let (status, body) = worker.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], ids.len(), "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8, "{body}");
    assert_eq!(body["choices"][0]["text"], text, "{body}");

    let body = serde_json::json!({
        "model": "tiny", "messages": messages, "max_tokens": 4, "temperature": 0,
    });
    let (status, body) = worker.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], chat.len(), "{body}");
}

/// A byte-level BPE vocabulary (GPT-2's 256 byte characters, then `20`, `26`, `2026` and
/// `'S`) with `tokenizer.ggml.pre` set to `pre`.
fn byte_level(pre: &str) -> Tokenizer {
    let mut tokens = blaze_worker::testing::byte_tokens();
    tokens.extend(["20", "26", "2026", "'S"].map(String::from));
    let merges = ["2 0", "2 6", "20 26", "' S"].map(|m| Value::String(m.into()));
    tokenizer(&[
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges.to_vec())),
    ])
}

#[test]
fn byte_level_words_are_split_as_the_pre_tokenizer_names() {
    let (i, t, s, quote, space) = (73, 84, 83, 39, 32);
    let (d0, d2, d6) = (48, 50, 54);
    let (twenty, year, quote_s) = (256, 258, 259);
    let text = "IT'S 2026";
    // GPT-2: digits merge in one word with their space; contractions only in lower case.
    assert_eq!(byte_level("gpt2").encode(text).unwrap(), [i, t, quote, s, space, year]);
    // Llama 3: "'S" is one word, digits in groups of up to three.
    assert_eq!(
        byte_level("llama-bpe").encode(text).unwrap(),
        [i, t, quote_s, space, twenty, d2, d6]
    );
    // Qwen2: every digit alone.
    assert_eq!(byte_level("qwen2").encode(text).unwrap(), [i, t, quote_s, space, d2, d0, d2, d6]);
    // SmolLM: every digit alone, then GPT-2's split.
    assert_eq!(byte_level("smollm").encode(text).unwrap(), [i, t, quote, s, space, d2, d0, d2, d6]);
    for pre in ["gpt2", "llama-bpe", "qwen2", "smollm", "something-new"] {
        let tok = byte_level(pre);
        assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text, "{pre}");
        assert_eq!(tok.prompt_specials(), PromptSpecials::default(), "{pre}");
    }
}
