//! The encoder families: token ids and a 0/1 mask in, one state per token out.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, xlm_roberta};

use super::bert::Bert;
use serde_json::Value;

use crate::{Error, Result};

/// The `model_type`s served.
pub const MODEL_TYPES: &[&str] = &["bert", "xlm-roberta", "roberta"];

/// A loaded encoder.
pub(super) enum Encoder {
    /// BERT: our own forward pass ([`super::bert`]) on candle-transformers' config.
    Bert(Box<Bert>),
    /// XLM-RoBERTa and RoBERTa: candle-transformers' model whole (f32).
    XlmRoberta(Box<xlm_roberta::XLMRobertaModel>, xlm_roberta::Config),
}

impl Encoder {
    /// The encoder `config` describes, its weights from `tensors` held in `dtype`.
    pub(super) fn load(
        config: &Value,
        tensors: HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let model_type = config["model_type"].as_str().unwrap_or_default();
        // Checkpoints saved from a task model put the encoder under its name.
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| {
                Error::Unsupported("no embeddings.word_embeddings.weight in the safetensors".into())
            })?;
        let mut vb = VarBuilder::from_tensors(tensors, dtype, device);
        if !prefix.is_empty() {
            vb = vb.pp(prefix.trim_end_matches('.'));
        }
        let unreadable = |e: serde_json::Error| Error::Unsupported(format!("config.json: {e}"));
        match model_type {
            "bert" => {
                let config: bert::Config =
                    serde_json::from_value(config.clone()).map_err(unreadable)?;
                Ok(Encoder::Bert(Box::new(Bert::load(vb, config, dtype)?)))
            }
            "xlm-roberta" | "roberta" => {
                let config: xlm_roberta::Config =
                    serde_json::from_value(config.clone()).map_err(unreadable)?;
                let model = xlm_roberta::XLMRobertaModel::new(&config, vb)?;
                Ok(Encoder::XlmRoberta(Box::new(model), config))
            }
            other => Err(Error::Unsupported(format!(
                "model_type {other:?} is not an embedding model this worker serves (served: {})",
                MODEL_TYPES.join(", ")
            ))),
        }
    }

    /// States `[batch, tokens, hidden]` of `ids` (`[batch, tokens]`, u32), attending only to
    /// the positions where `mask` (`[batch, tokens]`, f32) is 1.
    pub(super) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Encoder::Bert(bert) => bert.forward(ids, mask),
            Encoder::XlmRoberta(model, _) => {
                let types = ids.zeros_like()?;
                Ok(model.forward(ids, mask, &types, None, None, None)?)
            }
        }
    }

    /// Positions an input may take.
    pub(super) fn max_positions(&self) -> usize {
        match self {
            Encoder::Bert(bert) => bert.config.max_position_embeddings,
            // RoBERTa numbers positions from the padding id plus one.
            Encoder::XlmRoberta(_, c) => {
                c.max_position_embeddings.saturating_sub(c.pad_token_id as usize + 1)
            }
        }
    }

    pub(super) fn hidden_size(&self) -> usize {
        match self {
            Encoder::Bert(bert) => bert.config.hidden_size,
            Encoder::XlmRoberta(_, c) => c.hidden_size,
        }
    }

    pub(super) fn vocab_size(&self) -> usize {
        match self {
            Encoder::Bert(bert) => bert.config.vocab_size,
            Encoder::XlmRoberta(_, c) => c.vocab_size,
        }
    }

    /// The id padding fills a batch with.
    pub(super) fn pad_id(&self) -> u32 {
        match self {
            Encoder::Bert(bert) => bert.config.pad_token_id as u32,
            Encoder::XlmRoberta(_, c) => c.pad_token_id,
        }
    }
}
