//! Encoder models that turn a text into one vector: BERT-family checkpoints in the Hugging
//! Face layout (`config.json`, `*.safetensors`, `tokenizer.json`), pooled and normalized as
//! their sentence-transformers files say ([`sentence`]).
//!
//! `model_type` `bert` runs our own BERT forward pass ([`bert`]: a vectorized exact GELU,
//! fused query/key/value projections, and an attention mask that stays finite in f16 and
//! bf16, which made it a third faster than candle-transformers' `BertEncoder` on CPU) on
//! candle-transformers' BERT config. `xlm-roberta` and `roberta` run candle-transformers'
//! XLM-RoBERTa model as it is, in f32 whatever `--dtype` says (its position ids are a
//! cumulative sum in the weights' dtype, exact only in f32).
//!
//! A padded batch equals each input alone: padded keys get the most negative value added to
//! their attention scores (a weight of exactly 0 after the softmax), padded positions are
//! left out of the pooling, and BERT's position ids count from each input's start whatever
//! its padding. What remains is float rounding in matmuls of another shape (1e-6 here).

mod bert;
mod encoder;
pub mod sentence;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use serde_json::Value;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use self::encoder::Encoder;
pub use self::sentence::{Pooling, SentenceConfig};
use crate::{Error, Result};

/// An embedding model ready to serve.
pub struct EmbeddingModel {
    encoder: Encoder,
    /// Special tokens added, no truncation, no padding (whatever `tokenizer.json` says).
    tokenizer: tokenizers::Tokenizer,
    /// The same, cutting inputs to `max_tokens` (special tokens kept).
    truncating: tokenizers::Tokenizer,
    sentence: SentenceConfig,
    max_tokens: usize,
    dimensions: usize,
    vocab_size: usize,
    pad_id: u32,
    device: Device,
    dtype: DType,
    model_type: String,
}

/// Loads the embedding model in the folder `dir` onto `device`, its weights in `dtype` (an
/// XLM-RoBERTa model always in f32).
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<EmbeddingModel> {
    if !dir.is_dir() {
        return Err(Error::Unsupported(format!(
            "{}: an embedding model is a Hugging Face folder (config.json, *.safetensors, \
             tokenizer.json)",
            dir.display()
        )));
    }
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let model_type = config["model_type"].as_str().unwrap_or_default().to_owned();
    let dtype = if model_type == "bert" { dtype } else { DType::F32 };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            tensors.extend(candle_core::safetensors::load(&path, device)?);
        }
    }
    let encoder = Encoder::load(&config, tensors, dtype, device)?;
    let sentence = SentenceConfig::read(dir)?;
    let positions = encoder.max_positions();
    let max_tokens = sentence.max_seq_length.map_or(positions, |n| n.min(positions));
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut truncating = tokenizer.clone();
    let cut = TruncationParams {
        direction: TruncationDirection::Right,
        max_length: max_tokens,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    };
    truncating.with_truncation(Some(cut)).map_err(|e| Error::Tokenizer(e.to_string()))?;
    let model = EmbeddingModel {
        dimensions: encoder.hidden_size(),
        vocab_size: encoder.vocab_size(),
        pad_id: encoder.pad_id(),
        encoder,
        tokenizer,
        truncating,
        sentence,
        max_tokens,
        device: device.clone(),
        dtype,
        model_type,
    };
    tracing::info!(
        dir = %dir.display(), model_type = %model.model_type, ?dtype,
        pooling = ?model.sentence.pooling, normalize = model.sentence.normalize,
        max_tokens, dimensions = model.dimensions, matryoshka = model.sentence.matryoshka,
        "loaded an embedding model"
    );
    Ok(model)
}

impl EmbeddingModel {
    /// The longest input, in tokens (special ones included): the model's position table, or
    /// `sentence_bert_config.json`'s `max_seq_length` when that is shorter.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Components of each vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Token ids are below this.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The sentence-transformers settings: pooling, normalization, Matryoshka.
    pub fn sentence(&self) -> &SentenceConfig {
        &self.sentence
    }

    /// `config.json`'s `model_type`.
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// What the weights are held in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The token ids the model sees for `text`, special tokens included; cut to
    /// [`Self::max_tokens`] when `truncate`, else whole however long.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Vec<u32>> {
        let tokenizer = if truncate { &self.truncating } else { &self.tokenizer };
        let encoding = tokenizer.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One vector per input, from one forward pass over the inputs padded to the longest.
    /// Each input must be non-empty, at most [`Self::max_tokens`] long, with ids below
    /// [`Self::vocab_size`] (the engine checks before a request is queued).
    pub fn embed(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let longest = inputs.iter().map(|i| i.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(vec![Vec::new(); inputs.len()]);
        }
        let mut ids = Vec::with_capacity(inputs.len() * longest);
        let mut mask = Vec::with_capacity(inputs.len() * longest);
        for input in inputs {
            ids.extend_from_slice(input);
            ids.resize(ids.len() + longest - input.len(), self.pad_id);
            mask.extend(std::iter::repeat_n(1f32, input.len()));
            mask.resize(mask.len() + longest - input.len(), 0.0);
        }
        let shape = (inputs.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let states = self.encoder.forward(&ids, &mask)?.to_dtype(DType::F32)?;
        let lengths: Vec<usize> = inputs.iter().map(|i| i.len()).collect();
        let mut pooled = pool(self.sentence.pooling, &states, &mask, &lengths)?;
        if self.sentence.normalize {
            pooled = normalize(&pooled)?;
        }
        Ok(pooled.to_vec2::<f32>()?)
    }
}

/// `[batch, hidden]` vectors from `[batch, tokens, hidden]` states and the `[batch, tokens]`
/// 0/1 mask of real tokens.
fn pool(pooling: Pooling, states: &Tensor, mask: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let expanded = mask.unsqueeze(D::Minus1)?;
    let counts = mask.sum_keepdim(1)?;
    let summed = || states.broadcast_mul(&expanded)?.sum(1);
    Ok(match pooling {
        Pooling::Mean => summed()?.broadcast_div(&counts)?,
        Pooling::MeanSqrtLen => summed()?.broadcast_div(&counts.sqrt()?)?,
        Pooling::Cls => states.i((.., 0))?.contiguous()?,
        Pooling::LastToken => {
            let rows = lengths
                .iter()
                .enumerate()
                .map(|(i, &n)| states.i((i, n - 1)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)?
        }
        Pooling::Max => {
            // Padded positions get a value no real one is below.
            let padding = ((expanded.ones_like()? - &expanded)? * f64::from(f32::MIN))?;
            states.broadcast_add(&padding)?.max(1)?
        }
    })
}

/// Each row scaled to unit length (rows of zeros stay zeros), as `torch.nn.functional.
/// normalize` with its `eps` of 1e-12.
pub fn normalize(rows: &Tensor) -> Result<Tensor> {
    let norms = rows.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(rows.broadcast_div(&norms)?)
}

/// `vector` cut to its first `dimensions` components and, when `normalized`, scaled back to
/// unit length: a Matryoshka model's shorter embedding.
pub fn shorten(vector: &mut Vec<f32>, dimensions: usize, normalized: bool) {
    vector.truncate(dimensions);
    if normalized {
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_leaves_padding_out() {
        // Two inputs of 3 and 1 tokens, hidden size 2; the padded states are large, so any
        // leak shows.
        let states = Tensor::new(
            &[[[1f32, 2.], [3., 4.], [5., 6.]], [[7., 8.], [100., 100.], [100., 100.]]],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1.], [1., 0., 0.]], &Device::Cpu).unwrap();
        let pooled = |p| pool(p, &states, &mask, &[3, 1]).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled(Pooling::Mean), [[3., 4.], [7., 8.]]);
        assert_eq!(pooled(Pooling::Cls), [[1., 2.], [7., 8.]]);
        assert_eq!(pooled(Pooling::LastToken), [[5., 6.], [7., 8.]]);
        assert_eq!(pooled(Pooling::Max), [[5., 6.], [7., 8.]]);
        let sqrt3 = 3f32.sqrt();
        assert_eq!(pooled(Pooling::MeanSqrtLen), [[9. / sqrt3, 12. / sqrt3], [7., 8.]]);
    }

    #[test]
    fn normalizing_and_shortening_give_unit_vectors() {
        let rows = Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap();
        assert_eq!(normalize(&rows).unwrap().to_vec2::<f32>().unwrap(), [[0.6, 0.8], [0., 0.]]);
        let mut v = vec![0.6f32, 0.0, 0.8];
        shorten(&mut v, 2, true);
        assert_eq!(v, [1.0, 0.0]);
        let mut v = vec![3f32, 4., 5.];
        shorten(&mut v, 2, false);
        assert_eq!(v, [3.0, 4.0]);
    }
}
