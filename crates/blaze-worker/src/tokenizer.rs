//! Tokenizers from `tokenizer.json` or from GGUF metadata, and incremental detokenization
//! for streaming.

use std::path::Path;

mod gguf;
mod pre;

use candle_core::quantized::gguf_file;

pub use gguf::PromptSpecials;

use crate::{Error, Result};

/// A tokenizer, plus the tokens it adds around a prompt.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    specials: PromptSpecials,
}

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { inner, specials: PromptSpecials::default() })
    }

    /// Builds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata:
    /// byte-level BPE (`tokenizer.ggml.model = gpt2`: Llama 3, Qwen, SmolLM, Phi-4), words
    /// split as `tokenizer.ggml.pre` names, or SentencePiece (`llama`: Llama 2, Mistral,
    /// Phi-3, Gemma) with byte fallback.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let built = gguf::build(content)?;
        Ok(Self { inner: built.tokenizer, specials: built.specials })
    }

    /// The tokens the model's own tokenizer adds around a prompt.
    pub fn prompt_specials(&self) -> PromptSpecials {
        self.specials
    }

    /// Token ids of `text`; special tokens written in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Turns a growing list of token ids into text pieces, holding back bytes that do not yet
/// form whole UTF-8 characters.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// Adds a token and returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = tokenizer.decode(&self.ids[self.prefix..])?;
        // A UTF-8 character spans at most 4 byte tokens (byte-level BPE or SentencePiece's
        // byte fallback); past that, the
        // replacement character is what the model really produced.
        let incomplete = now.ends_with('\u{fffd}') && self.ids.len() - self.read < 4;
        if now.len() > before.len() && !incomplete {
            Ok(self.take(&before, &now))
        } else {
            Ok(String::new())
        }
    }

    /// Ends the stream: the text of the tokens still held back. Bytes that never formed a
    /// whole character come out as U+FFFD, as decoding every token at once gives them, so the
    /// pieces always add up to the full decode.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        if self.read == self.ids.len() {
            return Ok(String::new());
        }
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = tokenizer.decode(&self.ids[self.prefix..])?;
        Ok(self.take(&before, &now))
    }

    /// The text `now` adds to `before`, and every token so far counted as read. Replacement
    /// characters may decode differently once more bytes arrive, so the cut is at the longest
    /// common prefix rather than at `before.len()`.
    fn take(&mut self, before: &str, now: &str) -> String {
        let common: usize = before
            .chars()
            .zip(now.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.len_utf8())
            .sum();
        self.prefix = self.read;
        self.read = self.ids.len();
        now[common..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_survives_invalid_utf8_from_the_model() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 16).unwrap();
        let tok = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        let mut d = StreamDecoder::default();
        let mut text = String::new();
        // Lone continuation bytes, a truncated 3-byte sequence, then ASCII.
        for id in [
            tok.token_id("Ģ").unwrap_or(130),
            0xe2,
            0x82,
            0xcf,
            0xa3,
            0xe2,
            b'6' as u32,
            b'A' as u32,
        ] {
            text.push_str(&d.push(&tok, id).unwrap());
        }
        assert!(text.ends_with("6A") || text.ends_with('A'), "{text:?}");
    }

    #[test]
    fn stream_decoder_emits_multibyte_characters_whole() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 16).unwrap();
        let tok = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        let ids = tok.encode("é€x").unwrap();
        let mut d = StreamDecoder::default();
        let pieces: Vec<String> = ids.iter().map(|id| d.push(&tok, *id).unwrap()).collect();
        assert_eq!(pieces.concat(), "é€x");
        assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')), "{pieces:?}");
        assert_eq!(d.finish(&tok).unwrap(), "", "nothing held back");
    }

    #[test]
    fn a_stream_ending_inside_a_character_ends_with_what_a_full_decode_gives() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::write_tiny_llama(dir.path(), 16).unwrap();
        let tok = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        // "x", then the first two bytes of the three of "€".
        let mut ids = tok.encode("x").unwrap();
        let euro = tok.encode("€").unwrap();
        assert_eq!(euro.len(), 3, "one byte token per byte: {euro:?}");
        ids.extend_from_slice(&euro[..2]);
        let mut d = StreamDecoder::default();
        let mut text: String = ids.iter().map(|id| d.push(&tok, *id).unwrap()).collect();
        assert_eq!(text, "x", "the partial character is held back");
        text.push_str(&d.finish(&tok).unwrap());
        assert_eq!(text, tok.decode(&ids).unwrap());
        assert!(text.starts_with('x') && text.ends_with('\u{fffd}'), "{text:?}");
    }
}
