//! Byte-level BPE pre-tokenizers by `tokenizer.ggml.pre`: the regular expressions that cut
//! text into words before merging, as llama.cpp applies them for each name.

use tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use crate::{Error, Result};

/// GPT-2's split: contractions, letters, digits and other runs each with one leading space.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's split: contractions in any case, a letter run keeps one leading non-letter,
/// digits in groups of up to three, newlines apart.
const LLAMA3: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// Qwen2's split: Llama 3's with every digit on its own.
const QWEN2: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// A single digit (applied before GPT-2's split by SmolLM, StarCoder and others).
const DIGIT: &str = r"\p{N}";

/// llama.cpp's `default`: punctuation runs, GPT-2's split, digit runs, then groups of three.
const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"];

/// The splits, applied one after another, that `pre` names.
fn splits(pre: Option<&str>) -> &'static [&'static str] {
    match pre {
        Some(
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe",
        ) => &[LLAMA3],
        Some("qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez") => &[QWEN2],
        Some(
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b",
        ) => &[DIGIT, GPT2],
        Some("gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "roberta-bpe") => &[GPT2],
        Some("default") => DEFAULT,
        None => {
            tracing::warn!(
                "GGUF tokenizer.ggml.pre missing; splitting words as llama.cpp's default"
            );
            DEFAULT
        }
        Some(other) => {
            tracing::warn!(
                pre = other,
                "unknown GGUF tokenizer.ggml.pre {other:?}; splitting words as GPT-2 does"
            );
            &[GPT2]
        }
    }
}

/// The pre-tokenizer for a byte-level BPE vocabulary whose `tokenizer.ggml.pre` is `pre`:
/// the regex splits, each keeping what it did not match as pieces of their own, then the
/// byte-to-character mapping of byte-level BPE.
pub(super) fn byte_level(pre: Option<&str>) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for pattern in splits(pre) {
        let split = Split::new(
            SplitPattern::Regex((*pattern).into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, true, false).into());
    Ok(Sequence::new(steps).into())
}

#[cfg(test)]
mod tests {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    use super::*;

    /// The words `pre` cuts `text` into, bytes mapped back to text.
    fn words(pre: Option<&str>, text: &str) -> Vec<String> {
        let mut s = PreTokenizedString::from(text);
        byte_level(pre).unwrap().pre_tokenize(&mut s).unwrap();
        let decoder = ByteLevel::default();
        s.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(w, _, _)| tokenizers::Decoder::decode(&decoder, vec![w.to_string()]).unwrap())
            .collect()
    }

    #[test]
    fn digits_split_by_name() {
        let text = "in 2026 12345";
        assert_eq!(words(Some("gpt2"), text), ["in", " 2026", " 12345"]);
        assert_eq!(words(Some("llama-bpe"), text), ["in", " ", "202", "6", " ", "123", "45"]);
        assert_eq!(
            words(Some("qwen2"), text),
            ["in", " ", "2", "0", "2", "6", " ", "1", "2", "3", "4", "5"]
        );
        assert_eq!(
            words(Some("smollm"), text),
            ["in", " ", "2", "0", "2", "6", " ", "1", "2", "3", "4", "5"]
        );
    }

    #[test]
    fn contractions_are_case_insensitive_from_llama3_on() {
        let text = "DON'T you'LL";
        assert_eq!(words(Some("gpt2"), text), ["DON", "'", "T", " you", "'", "LL"]);
        assert_eq!(words(Some("llama-bpe"), text), ["DON", "'T", " you", "'LL"]);
        assert_eq!(words(Some("qwen2"), text), ["DON", "'T", " you", "'LL"]);
    }

    #[test]
    fn newlines_and_punctuation() {
        let text = "Hi!\n\nok.\n";
        // GPT-2 leaves the last whitespace character before a word on its own; Llama 3 and
        // Qwen2 end a punctuation run with the newlines after it and let a word take one
        // leading non-letter (a tab here).
        assert_eq!(words(Some("gpt2"), text), ["Hi", "!", "\n", "\n", "ok", ".", "\n"]);
        assert_eq!(words(Some("llama-bpe"), text), ["Hi", "!\n\n", "ok", ".\n"]);
        assert_eq!(words(Some("qwen2"), text), ["Hi", "!\n\n", "ok", ".\n"]);
        assert_eq!(words(Some("llama-bpe"), "a\tb c"), ["a", "\tb", " c"]);
        assert_eq!(words(Some("gpt2"), "a\tb c"), ["a", "\t", "b", " c"]);
    }

    #[test]
    fn unknown_names_fall_back_to_gpt2_and_default_splits_punctuation() {
        assert_eq!(words(Some("no-such-pre"), "in 2026"), ["in", " 2026"]);
        assert_eq!(words(Some("default"), "a+b 1234"), ["a", "+", "b", " ", "123", "4"]);
        assert_eq!(words(None, "a+b 1234"), ["a", "+", "b", " ", "123", "4"]);
    }
}
