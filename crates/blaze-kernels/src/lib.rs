//! CPU kernels the worker's hot loops need and candle lacks.
//!
//! [`QuantMatrix`] holds quantized projection weights (ggml's Q4_0, Q4_1 and Q8_0 blocks)
//! repacked for AVX-512 VNNI and multiplies activations by them over [`pool`]'s threads.
//! candle multiplies Q4_1 with scalar code only, so the worker used to widen such weights
//! to Q8_0: 70% more bytes for every decode step to read.

pub mod pool;
pub mod quant;

pub use quant::{Activations, QuantMatrix};
