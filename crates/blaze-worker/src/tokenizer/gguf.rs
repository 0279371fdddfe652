//! Tokenizers from GGUF metadata (`tokenizer.ggml.*`): byte-level BPE (`gpt2`) and
//! SentencePiece (`llama`), built as `tokenizers` pipelines that encode as llama.cpp does.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper};

use super::pre;
use crate::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
}

/// SentencePiece's word boundary mark, standing for a space.
const SPACE_MARK: &str = "\u{2581}";

/// The vocabulary a GGUF file lists.
struct Vocab {
    tokens: Vec<String>,
    /// One per token; all normal when the file has none.
    types: Vec<i32>,
    /// One per token; all zero when the file has none.
    scores: Vec<f32>,
}

fn get<'a>(content: &'a Content, key: &str) -> Option<&'a Value> {
    content.metadata.get(key)
}

fn array<'a>(content: &'a Content, key: &str) -> Result<Option<&'a Vec<Value>>> {
    get(content, key).map(|v| v.to_vec().map_err(Error::from)).transpose()
}

impl Vocab {
    fn read(content: &Content) -> Result<Self> {
        let tokens = array(content, "tokenizer.ggml.tokens")?.ok_or_else(|| {
            Error::Tokenizer("GGUF metadata tokenizer.ggml.tokens missing".into())
        })?;
        let tokens: Vec<String> = tokens
            .iter()
            .enumerate()
            // llama.cpp names empty tokens so that every id keeps a distinct string.
            .map(|(i, v)| {
                let t = v.to_string()?;
                Ok(if t.is_empty() { format!("[EMPTY_{i}]") } else { t.clone() })
            })
            .collect::<Result<_>>()?;
        let n = tokens.len();
        let types = match array(content, "tokenizer.ggml.token_type")? {
            Some(v) => v.iter().map(Value::to_i32).collect::<Result<Vec<_>, _>>()?,
            None => vec![token_type::NORMAL; n],
        };
        let scores = match array(content, "tokenizer.ggml.scores")? {
            Some(v) => v.iter().map(Value::to_f32).collect::<Result<Vec<_>, _>>()?,
            None => vec![0.0; n],
        };
        if types.len() != n || scores.len() != n {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer lists {n} tokens but {} types and {} scores",
                types.len(),
                scores.len()
            )));
        }
        Ok(Self { tokens, types, scores })
    }

    /// Token string to id; a string listed twice keeps its last id, as in llama.cpp.
    fn ids(&self) -> tokenizers::models::bpe::Vocab {
        self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
    }

    /// Control, unknown and user-defined tokens, matched whole in text before the model
    /// sees it; control and unknown ones are special (left out of decoded text).
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .zip(&self.types)
            .filter_map(|(t, ty)| match *ty {
                token_type::CONTROL | token_type::UNKNOWN => Some((t, true)),
                token_type::USER_DEFINED => Some((t, false)),
                _ => None,
            })
            .map(|(t, special)| AddedToken::from(t.clone(), special).normalized(false))
            .collect()
    }
}

/// Which tokenizer a GGUF file describes, plus what to add around a prompt.
pub(super) struct Built {
    pub tokenizer: tokenizers::Tokenizer,
    pub specials: PromptSpecials,
}

/// The tokens llama.cpp adds around a prompt it encodes: `tokenizer.ggml.add_bos_token` /
/// `add_eos_token`, defaulting to BOS-only for SentencePiece and nothing for BPE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptSpecials {
    /// Prepended to every prompt.
    pub bos: Option<u32>,
    /// Appended to every prompt.
    pub eos: Option<u32>,
}

pub(super) fn build(content: &Content) -> Result<Built> {
    let model = get(content, "tokenizer.ggml.model")
        .ok_or_else(|| Error::Tokenizer("GGUF metadata tokenizer.ggml.model missing".into()))?
        .to_string()?
        .clone();
    let vocab = Vocab::read(content)?;
    let (mut tokenizer, sentencepiece) = match model.as_str() {
        "gpt2" => (byte_level_bpe(content, &vocab)?, false),
        "llama" => (sentencepiece(content, &vocab)?, true),
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer model {other:?} (supported: gpt2 byte-level BPE, llama \
                 SentencePiece)"
            )));
        }
    };
    tokenizer
        .add_special_tokens(vocab.added_tokens())
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let specials = prompt_specials(content, vocab.tokens.len(), sentencepiece);
    Ok(Built { tokenizer, specials })
}

fn prompt_specials(content: &Content, n: usize, sentencepiece: bool) -> PromptSpecials {
    let flag = |key: &str, default: bool| {
        get(content, key).and_then(|v| v.to_bool().ok()).unwrap_or(default)
    };
    // SentencePiece vocabularies put BOS and EOS at 1 and 2 unless the file says otherwise.
    let id = |key: &str, default: Option<u32>| {
        get(content, key).and_then(|v| v.to_u32().ok()).or(default).filter(|&i| (i as usize) < n)
    };
    let spm = |i: u32| sentencepiece.then_some(i);
    let bos = id("tokenizer.ggml.bos_token_id", spm(1));
    let eos = id("tokenizer.ggml.eos_token_id", spm(2));
    PromptSpecials {
        bos: bos.filter(|_| flag("tokenizer.ggml.add_bos_token", sentencepiece)),
        eos: eos.filter(|_| flag("tokenizer.ggml.add_eos_token", false)),
    }
}

fn bpe_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("GGUF vocabulary: {e}"))
}

/// Byte-level BPE with the file's merges, words split as `tokenizer.ggml.pre` says.
fn byte_level_bpe(content: &Content, vocab: &Vocab) -> Result<tokenizers::Tokenizer> {
    let merges = array(content, "tokenizer.ggml.merges")?
        .ok_or_else(|| Error::Tokenizer("GGUF metadata tokenizer.ggml.merges missing".into()))?
        .iter()
        .map(|v| {
            let m = v.to_string()?;
            let (a, b) = m.split_once(' ').unwrap_or((m.as_str(), ""));
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab.ids(), merges).build().map_err(bpe_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let pre = get(content, "tokenizer.ggml.pre").and_then(|v| v.to_string().ok());
    tokenizer.with_pre_tokenizer(Some(pre::byte_level(pre.map(String::as_str))?));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    Ok(tokenizer)
}

/// SentencePiece BPE as llama.cpp runs it: spaces become `▁` (one more in front of the text
/// and after every special token, unless `tokenizer.ggml.add_space_prefix` is false), then
/// adjacent pieces merge, the pair whose union scores highest first, and characters no
/// piece covers fall back to their UTF-8 byte tokens (`<0x0A>`).
///
/// A merge list ranked by the merged piece's score gives the same pieces with the
/// `tokenizers` BPE model: every normal piece that splits into two normal pieces is a merge.
fn sentencepiece(content: &Content, vocab: &Vocab) -> Result<tokenizers::Tokenizer> {
    let ids = vocab.ids();
    let normal = |piece: &str| {
        ids.get(piece).is_some_and(|&i| vocab.types[i as usize] == token_type::NORMAL)
    };
    let mut ranked: Vec<(f32, usize, usize)> = Vec::new();
    for (id, piece) in vocab.tokens.iter().enumerate() {
        if vocab.types[id] != token_type::NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            if normal(&piece[..at]) && normal(&piece[at..]) {
                ranked.push((vocab.scores[id], id, at));
            }
        }
    }
    // Highest score first; equal scores by id, then by the split.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = ranked
        .into_iter()
        .map(|(_, id, at)| {
            let (l, r) = vocab.tokens[id].split_at(at);
            (l.to_string(), r.to_string())
        })
        .collect();
    let unk = get(content, "tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .map(|i| i as usize)
        .or_else(|| vocab.types.iter().position(|&t| t == token_type::UNKNOWN))
        .and_then(|i| vocab.tokens.get(i).cloned());
    let mut builder =
        BPE::builder().vocab_and_merges(ids, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let mut tokenizer = tokenizers::Tokenizer::new(builder.build().map_err(bpe_error)?);
    let add_space_prefix = get(content, "tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let spaces = Replace::new(" ", SPACE_MARK).map_err(bpe_error)?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE_MARK.into()).into(), spaces.into()]).into()
    } else {
        spaces.into()
    };
    tokenizer.with_normalizer(Some(normalizer)).map_err(bpe_error)?;
    // `▁` back to spaces, byte tokens to their bytes, all joined. The space in front of
    // the first word stays: generated text continues a prompt.
    let decoder: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE_MARK, " ").map_err(bpe_error)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    tokenizer.with_decoder(Some(DecoderSequence::new(decoder)));
    Ok(tokenizer)
}
