//! The enumerated values of the worker's flags. Each displays as the spelling clap parses.

use std::fmt;

use clap::ValueEnum;

/// What kind of model the worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Text generation (OpenAI completions and chat completions).
    Llm,
    /// Embeddings (not served by this build yet).
    Embedding,
    /// Image generation (not served by this build yet).
    Diffusion,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable (coloured only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// A checkpoint format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelFormat {
    /// A Hugging Face folder: config.json, *.safetensors, tokenizer.json.
    Safetensors,
    /// A GGUF file, tokenizer and chat template in its metadata.
    Gguf,
}

/// Numeric type of safetensors weights in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// f32 on CPU, bf16 on a GPU.
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// In-situ quantization of safetensors projection weights at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Quantization {
    /// 8-bit blocks of 32 weights with an f16 scale.
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit k-quants: superblocks of 256 weights.
    #[value(name = "q4k")]
    Q4K,
}

/// Where the worker computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The first GPU when this build has CUDA and one is there, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; starting fails without one.
    Cuda,
}

/// How a GGUF file's quantized projection weights are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// What decodes fastest on the device (the worker's `model::resolve_weights`).
    #[default]
    Auto,
    /// As stored in the file.
    Stored,
    /// Quantizations candle has only scalar CPU kernels for (Q4_1, Q5_0, Q5_1) are
    /// re-quantized to Q8_0 (SIMD kernels; 34 bytes per 32 weights), others kept as stored.
    /// On CPUs with AVX-512 VNNI, Q8_0 projections whose input width is not a multiple of
    /// 256 carry zero columns up to one, so that candle's tiled kernels take them.
    #[value(name = "q8_0")]
    Q8_0,
    /// Expanded to f32: f32 GEMM kernels, 4 bytes per weight.
    F32,
    /// Both: `q8_0` for small decode steps, `f32` for prefill and larger steps; the faster
    /// kernel for each, in about 5.1 bytes per weight. A sequence's greedy output can then
    /// depend on how many others share its decode steps, and on which dense copies the
    /// scheduler kept after timing both kernels at start (the two kernels round
    /// differently: rarely visible on a trained model, often on random weights); the other
    /// choices are batch-invariant.
    Dual,
}

macro_rules! display_as_value {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let value = self.to_possible_value().expect("no value is skipped");
                f.write_str(value.get_name())
            }
        }
    )*};
}

display_as_value!(Kind, LogFormat, ModelFormat, Dtype, Quantization, Device, Weights);
