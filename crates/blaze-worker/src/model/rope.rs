//! RoPE frequencies, with the rescalings checkpoints ask for.

use serde_json::Value;

use crate::{Error, Result};

/// How a checkpoint rescales RoPE's frequencies (at every position, so leaving it out
/// changes every output).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain `theta^(-2i/d)`.
    #[default]
    None,
    /// Every frequency divided by `factor` (`rope_scaling.type = linear`).
    Linear(f32),
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a smooth blend
    /// between (`rope_scaling.rope_type = llama3`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelengths past `original_max_position_embeddings / low_freq_factor` are low.
        low_freq_factor: f32,
        /// Wavelengths under `original_max_position_embeddings / high_freq_factor` are high.
        high_freq_factor: f32,
        /// The context the model was pretrained at.
        original_max_position_embeddings: f32,
    },
    /// One divisor per frequency, as llama.cpp stores them (`rope_freqs.weight`).
    Divisors(Vec<f32>),
}

impl RopeScaling {
    /// Reads a `config.json` `rope_scaling` object (`null` is none).
    pub fn from_hf(value: &Value) -> Result<RopeScaling> {
        if value.is_null() {
            return Ok(RopeScaling::None);
        }
        let kind = value["rope_type"].as_str().or(value["type"].as_str()).unwrap_or("");
        let num = |key: &str| -> Result<f32> {
            value[key].as_f64().map(|v| v as f32).ok_or_else(|| {
                Error::Unsupported(format!("rope_scaling {value} has no number {key}"))
            })
        };
        match kind {
            // Dynamic NTK changes the base only past `max_position_embeddings`, which is
            // as far as the worker serves.
            "default" | "dynamic" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear(num("factor")?)),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            }),
            _ => Err(Error::Unsupported(format!(
                "rope_scaling {value} (supported: default, dynamic, linear, llama3)"
            ))),
        }
    }

    /// The inverse frequencies of the `dim / 2` rotated pairs.
    pub fn inv_freq(&self, dim: usize, theta: f32) -> Vec<f32> {
        let plain = (0..dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f32 / dim as f32));
        match self {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear(factor) => plain.map(|f| f / factor).collect(),
            RopeScaling::Divisors(d) => plain.zip(d).map(|(f, d)| f / d).collect(),
            &RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            } => plain
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < original / high {
                        f
                    } else if wavelen > original / low {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect(),
        }
    }
}
