//! What a sentence-transformers folder says about turning an encoder's token states into one
//! vector: `modules.json` (which modules run, in order), the Pooling module's
//! `config.json`, `sentence_bert_config.json` (the longest input) and the model card's tags
//! (whether shorter vectors are meaningful).
//!
//! Without `modules.json` (a plain Hugging Face encoder folder) the vector is the mean of the
//! token states, L2-normalized: what most sentence-transformers models do, and unit length
//! as OpenAI's embeddings are, so that a dot product is a cosine. With it, exactly its
//! modules: Transformer, Pooling and Normalize are served; any other module (Dense, a
//! Router, ...) fails the load naming it rather than giving vectors the model never made.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the input's token states.
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The last token's state (decoder-style embedding models).
    LastToken,
    /// The component-wise maximum over the input's tokens.
    Max,
    /// The sum of the token states over the square root of their count.
    MeanSqrtLen,
}

impl Pooling {
    /// A sentence-transformers pooling mode name, as `pooling_mode` spells it.
    fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "lasttoken" => Pooling::LastToken,
            "max" => Pooling::Max,
            "mean_sqrt_len_tokens" => Pooling::MeanSqrtLen,
            other => {
                return Err(Error::Unsupported(format!(
                    "pooling mode {other:?} (served: mean, cls, lasttoken, max, \
                     mean_sqrt_len_tokens)"
                )));
            }
        })
    }
}

/// The sentence-transformers settings of a model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceConfig {
    /// How token states are pooled.
    pub pooling: Pooling,
    /// Whether the pooled vector is scaled to unit length.
    pub normalize: bool,
    /// `sentence_bert_config.json`'s `max_seq_length`: the longest input, in tokens, the
    /// model was trained for (shorter than the position table in many models).
    pub max_seq_length: Option<usize>,
    /// Whether the model was trained so that its vectors' leading components are an
    /// embedding on their own (Matryoshka representation learning): the model card's tags
    /// say `matryoshka` (sentence-transformers writes `loss:MatryoshkaLoss`).
    pub matryoshka: bool,
}

impl SentenceConfig {
    /// Reads the settings of the folder `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let card = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
        let matryoshka = card_says_matryoshka(&card);
        let Some(modules) = read_json(&dir.join("modules.json"))? else {
            let max_seq_length = max_seq_length(dir)?;
            return Ok(Self {
                pooling: Pooling::Mean,
                normalize: true,
                max_seq_length,
                matryoshka,
            });
        };
        let Value::Array(modules) = modules else {
            return Err(Error::Unsupported("modules.json is not a list of modules".into()));
        };
        let mut pooling = None;
        let mut normalize = false;
        let mut max_len = None;
        for module in &modules {
            let kind = module["type"].as_str().unwrap_or_default();
            let path = dir.join(module["path"].as_str().unwrap_or_default());
            match kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" => max_len = max_seq_length(&path)?.or(max_len),
                "Pooling" => {
                    let config = read_json(&path.join("config.json"))?.ok_or_else(|| {
                        Error::Unsupported(format!("{}/config.json is missing", path.display()))
                    })?;
                    pooling = Some(pooling_of(&config)?);
                }
                "Normalize" => normalize = true,
                _ => {
                    return Err(Error::Unsupported(format!(
                        "modules.json: module {kind:?} (served: Transformer, Pooling, Normalize)"
                    )));
                }
            }
        }
        let pooling = pooling.ok_or_else(|| {
            Error::Unsupported(
                "modules.json has no Pooling module: the model makes no \
                                sentence embedding"
                    .into(),
            )
        })?;
        let max_seq_length = max_len.or(max_seq_length(dir)?);
        Ok(Self { pooling, normalize, max_seq_length, matryoshka })
    }
}

/// The pooling a Pooling module's `config.json` asks for: `pooling_mode` (a name, or a list
/// of one), or the older `pooling_mode_*_token(s)` flags, exactly one of them on.
fn pooling_of(config: &Value) -> Result<Pooling> {
    if config["include_prompt"] == Value::Bool(false) {
        return Err(Error::Unsupported(
            "pooling with include_prompt false (instruction prompts left out of the mean)".into(),
        ));
    }
    let names: Vec<String> = match &config["pooling_mode"] {
        Value::String(name) => vec![name.clone()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => [
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_lasttoken", "lasttoken"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
            ("pooling_mode_weightedmean_tokens", "weightedmean"),
        ]
        .into_iter()
        .filter(|(key, _)| config[*key] == Value::Bool(true))
        .map(|(_, name)| name.to_owned())
        .collect(),
    };
    match names.as_slice() {
        [one] => Pooling::from_name(one),
        [] => Err(Error::Unsupported("the Pooling module names no pooling mode".into())),
        many => Err(Error::Unsupported(format!(
            "several pooling modes at once ({}): their vectors concatenated",
            many.join(", ")
        ))),
    }
}

/// `max_seq_length` from `sentence_bert_config.json` in `dir`, if there is one.
fn max_seq_length(dir: &Path) -> Result<Option<usize>> {
    let config = read_json(&dir.join("sentence_bert_config.json"))?;
    Ok(config.and_then(|c| c["max_seq_length"].as_u64()).map(|n| n as usize))
}

/// Whether a model card's YAML front matter tags the model as Matryoshka-trained.
fn card_says_matryoshka(card: &str) -> bool {
    let Some(front) = card.strip_prefix("---") else { return false };
    let front = front.split("\n---").next().unwrap_or_default();
    front
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("- "))
        .any(|tag| tag.to_ascii_lowercase().contains("matryoshka"))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const MODULES: &str = r#"[
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
      {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    #[test]
    fn a_minilm_style_folder_means_normalizes_and_caps_the_length() {
        let pooling = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}"#;
        let dir = folder(&[
            ("modules.json", MODULES),
            ("1_Pooling/config.json", pooling),
            ("sentence_bert_config.json", r#"{"max_seq_length": 256}"#),
            ("README.md", "---\ntags:\n- sentence-transformers\n---\n# matryoshka dolls\n"),
        ]);
        let config = SentenceConfig::read(dir.path()).unwrap();
        let expected = SentenceConfig {
            pooling: Pooling::Mean,
            normalize: true,
            max_seq_length: Some(256),
            matryoshka: false,
        };
        assert_eq!(config, expected, "the word in the card's text is no tag");
    }

    #[test]
    fn without_sentence_transformers_files_the_mean_is_normalized() {
        let config = SentenceConfig::read(folder(&[]).path()).unwrap();
        assert_eq!(
            (config.pooling, config.normalize, config.max_seq_length),
            (Pooling::Mean, true, None)
        );
    }

    #[test]
    fn pooling_modes_read_in_both_spellings() {
        for (config, pooling) in [
            (json!({"pooling_mode": "cls"}), Pooling::Cls),
            (json!({"pooling_mode": ["lasttoken"]}), Pooling::LastToken),
            (
                json!({"pooling_mode_max_tokens": true, "pooling_mode_mean_tokens": false}),
                Pooling::Max,
            ),
            (json!({"pooling_mode_mean_sqrt_len_tokens": true}), Pooling::MeanSqrtLen),
        ] {
            assert_eq!(pooling_of(&config).unwrap(), pooling, "{config}");
        }
        for (config, says) in [
            (json!({"pooling_mode": "weightedmean"}), "weightedmean"),
            (json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}), "several"),
            (json!({}), "no pooling mode"),
            (json!({"pooling_mode": "mean", "include_prompt": false}), "include_prompt"),
        ] {
            let e = pooling_of(&config).unwrap_err().to_string();
            assert!(e.contains(says), "{config}: {e}");
        }
    }

    #[test]
    fn unknown_modules_and_a_missing_pooling_module_fail_naming_them() {
        let dense = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#;
        let e = SentenceConfig::read(folder(&[("modules.json", dense)]).path()).unwrap_err();
        assert!(e.to_string().contains("sentence_transformers.models.Dense"), "{e}");
        let bare = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"}]"#;
        let e = SentenceConfig::read(folder(&[("modules.json", bare)]).path()).unwrap_err();
        assert!(e.to_string().contains("no Pooling module"), "{e}");
    }

    #[test]
    fn matryoshka_comes_from_the_card_tags() {
        let card = "---\nlibrary_name: sentence-transformers\ntags:\n- sentence-similarity\n- loss:MatryoshkaLoss\n---\ntext";
        assert!(card_says_matryoshka(card));
        assert!(!card_says_matryoshka("no front matter\n- matryoshka\n"));
        assert!(!card_says_matryoshka("---\ntags:\n- feature-extraction\n---\n- matryoshka\n"));
    }
}
