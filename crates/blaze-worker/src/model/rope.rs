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
    /// Phi-3.5 / Phi-4's LongRoPE within the pretraining context: frequencies divided by
    /// the short factors, cos and sin multiplied by `attention_factor`. (Past the
    /// pretraining context the long factors take over; the worker serves up to it only.)
    LongRope {
        /// One divisor per frequency.
        short_factor: Vec<f32>,
        /// Scale of cos and sin.
        attention_factor: f32,
    },
}

impl RopeScaling {
    /// Reads a `config.json` `rope_scaling` object (`null` is none); LongRoPE needs the
    /// declared context and the pretraining one (`original_max_position_embeddings`).
    pub fn from_hf(value: &Value, context: usize, original: Option<usize>) -> Result<RopeScaling> {
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
            "longrope" => {
                let original = original.ok_or_else(|| {
                    Error::Unsupported("longrope without original_max_position_embeddings".into())
                })?;
                let short_factor = value["short_factor"].as_array().map(|a| {
                    a.iter().filter_map(Value::as_f64).map(|v| v as f32).collect::<Vec<_>>()
                });
                let short_factor = short_factor.ok_or_else(|| {
                    Error::Unsupported(format!("rope_scaling {value} has no short_factor"))
                })?;
                let attention_factor = match value["attention_factor"].as_f64() {
                    Some(f) => f as f32,
                    None => longrope_attention_factor(context, original),
                };
                Ok(RopeScaling::LongRope { short_factor, attention_factor })
            }
            _ => Err(Error::Unsupported(format!(
                "rope_scaling {value} (supported: default, dynamic, linear, llama3, longrope)"
            ))),
        }
    }

    /// The inverse frequencies of the `dim / 2` rotated pairs.
    pub fn inv_freq(&self, dim: usize, theta: f32) -> Vec<f32> {
        let plain = (0..dim / 2).map(|i| 1.0 / theta.powf(2.0 * i as f32 / dim as f32));
        match self {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear(factor) => plain.map(|f| f / factor).collect(),
            RopeScaling::Divisors(d) | RopeScaling::LongRope { short_factor: d, .. } => {
                plain.zip(d).map(|(f, d)| f / d).collect()
            }
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

    /// Factor cos and sin are multiplied by (1 but for LongRoPE).
    pub fn attention_factor(&self) -> f32 {
        match self {
            RopeScaling::LongRope { attention_factor, .. } => *attention_factor,
            _ => 1.0,
        }
    }

    /// Frequencies the scaling has factors for, if it has a list of them.
    pub fn factor_count(&self) -> Option<usize> {
        match self {
            RopeScaling::Divisors(d) | RopeScaling::LongRope { short_factor: d, .. } => {
                Some(d.len())
            }
            _ => None,
        }
    }
}

/// LongRoPE's scale of cos and sin for a context stretched from `original` to `context`
/// positions: `sqrt(1 + ln(context / original) / ln(original))`, 1 when not stretched.
pub fn longrope_attention_factor(context: usize, original: usize) -> f32 {
    let scale = context as f64 / original as f64;
    if scale <= 1.0 {
        return 1.0;
    }
    (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LongRoPE divides each frequency by its factor (as transformers' `1 / (factor *
    /// base^(2i/d))` and llama.cpp's freq_factors do) and scales cos/sin as transformers
    /// does: Phi-3.5-mini (4096 stretched to 131072) by 1.1902.
    #[test]
    fn longrope_divides_frequencies_and_scales_like_transformers() {
        let value = serde_json::json!({
            "type": "longrope", "short_factor": [1.0, 2.0, 4.0, 8.0], "long_factor": [9.0, 9.0, 9.0, 9.0],
        });
        let scaling = RopeScaling::from_hf(&value, 131_072, Some(4096)).unwrap();
        let plain = RopeScaling::None.inv_freq(8, 10_000.0);
        let scaled = scaling.inv_freq(8, 10_000.0);
        let ratios: Vec<f32> = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect();
        assert_eq!(ratios, [1.0, 2.0, 4.0, 8.0]);
        assert!((scaling.attention_factor() - 1.190_238).abs() < 1e-5);
        assert_eq!(longrope_attention_factor(4096, 4096), 1.0);
        let yarn = serde_json::json!({"type": "yarn", "factor": 4.0});
        let err = RopeScaling::from_hf(&yarn, 4096, None).unwrap_err().to_string();
        assert!(err.contains("yarn") && err.contains("llama3"), "{err}");
    }
}
