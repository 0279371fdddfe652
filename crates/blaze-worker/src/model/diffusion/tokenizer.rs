//! The CLIP tokenizer of a pipeline, from `tokenizer/tokenizer.json` when the folder has
//! one, else from the `vocab.json` and `merges.txt` that diffusers folders ship: text
//! lower-cased with runs of whitespace made one space, split into words, letters and
//! digits, byte-level BPE with `</w>` marking a word's end. A prompt becomes one row of the
//! encoder's length: start token, at most that length minus two tokens of text (the rest is
//! cut, as diffusers cuts it), end token, then padding.

use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as Normalizers};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";
/// Words, as CLIP splits them.
const WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt as the encoder takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Token ids, exactly the encoder's length.
    pub ids: Vec<u32>,
    /// Where the end token is (the pooled output is read there).
    pub end: usize,
    /// Tokens of text cut because the prompt was longer than the row.
    pub cut: usize,
}

/// A CLIP tokenizer with its special tokens.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    start: u32,
    end: u32,
    pad: u32,
    length: usize,
}

impl ClipTokenizer {
    /// Loads `dir/folder` for rows of `length` tokens.
    pub fn load(dir: &Path, folder: &str, length: usize) -> Result<Self> {
        let sub = dir.join(folder);
        let json = sub.join("tokenizer.json");
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(|e| tok_error(&json, e))?
        } else {
            from_vocab_and_merges(&sub)?
        };
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| {
                Error::Tokenizer(format!("{}: the vocabulary has no {token}", sub.display()))
            })
        };
        let (start, end) = (id(START)?, id(END)?);
        let pad = match pad_token(&sub) {
            Some(token) => id(&token)?,
            None => end,
        };
        if length < 2 {
            return Err(Error::Tokenizer(format!("rows of {length} tokens hold no text")));
        }
        Ok(Self { inner, start, end, pad, length })
    }

    /// Tokens in a row.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The row for `text`.
    pub fn row(&self, text: &str) -> Result<Row> {
        let encoding =
            self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("prompt: {e}")))?;
        let tokens = encoding.get_ids();
        let room = self.length - 2;
        let kept = tokens.len().min(room);
        let mut ids = Vec::with_capacity(self.length);
        ids.push(self.start);
        ids.extend_from_slice(&tokens[..kept]);
        ids.push(self.end);
        let end = ids.len() - 1;
        ids.resize(self.length, self.pad);
        Ok(Row { ids, end, cut: tokens.len() - kept })
    }
}

fn tok_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {e}", path.display()))
}

/// `pad_token` from `tokenizer_config.json` or `special_tokens_map.json` (a string or an
/// object with `content`).
fn pad_token(dir: &Path) -> Option<String> {
    ["tokenizer_config.json", "special_tokens_map.json"].iter().find_map(|name| {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        match &value["pad_token"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
            _ => None,
        }
    })
}

fn from_vocab_and_merges(dir: &Path) -> Result<tokenizers::Tokenizer> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let (vocab_s, merges_s) = (vocab.to_string_lossy(), merges.to_string_lossy());
    let bpe = BPE::from_file(&vocab_s, &merges_s)
        .end_of_word_suffix("</w>".into())
        .unk_token(END.into())
        .build()
        .map_err(|e| tok_error(dir, format!("vocab.json and merges.txt: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let whitespace =
        Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| tok_error(dir, e))?;
    let normalizers: Vec<NormalizerWrapper> = vec![NFC.into(), whitespace.into(), Lowercase.into()];
    tokenizer
        .with_normalizer(Some(Normalizers::new(normalizers)))
        .map_err(|e| tok_error(dir, e))?;
    let words =
        Split::new(SplitPattern::Regex(WORDS.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| tok_error(dir, e))?;
    let steps: Vec<PreTokenizerWrapper> =
        vec![words.into(), ByteLevel::new(false, true, false).into()];
    tokenizer.with_pre_tokenizer(Some(PreTokenizers::new(steps)));
    Ok(tokenizer)
}
