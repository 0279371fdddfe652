//! A projection's weights, quantized, dense or both, and how a decode step multiplies by them.

use std::sync::Arc;

use blaze_kernels::{Activations, QuantMatrix};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use crate::Result;

/// A projection's weights: quantized, dense, or both (quantized for decode steps of fewer
/// than [`super::DENSE_MIN_ROWS`] sequences, dense for prefill and larger steps).
///
/// The dense copy is held transposed, `[in, out]` and contiguous, and multiplied as is: the
/// GEMM then reads it in place. Held `[out, in]` (candle's layout, multiplied through a
/// transposed view) GEMM packed the whole matrix on every call, a quarter of a 16-sequence
/// decode step's time.
#[derive(Clone)]
pub struct Linear {
    quantized: Option<Quantized>,
    /// Zero columns the quantized weights carry past the input width (k-quants take whole
    /// 256-value blocks); the input gets as many zeros before it is multiplied.
    pad: usize,
    dense_t: Option<Tensor>,
    bias: Option<Tensor>,
}

/// What a pass multiplies: it picks the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// A decode step of fewer than [`super::DENSE_MIN_ROWS`] sequences: quantized weights
    /// (and, on Blaze's kernels, quantized activations).
    SmallDecode,
    /// A decode step of more: the dense copy where there is one, else as `SmallDecode`.
    LargeDecode,
    /// Prompt tokens: the dense copy where there is one; on Blaze's kernels, f32
    /// activations. A prompt's numbers are then those of f32 weights, whatever the batch:
    /// quantizing a prefill's activations too flipped SmolLM2's greedy answer to "What is
    /// the capital of France?" from "The capital of France is Paris." to "La femme de
    /// France, ...".
    Prefill,
}

/// Quantized weights and the kernel that multiplies by them.
#[derive(Clone)]
enum Quantized {
    /// candle's kernels.
    Candle(QMatMul),
    /// Q4_0, Q4_1 or Q8_0 repacked for Blaze's AVX-512 VNNI kernels ([`blaze_kernels`]).
    Packed(Arc<QuantMatrix>),
}

/// `w` (`[out, in]`, a ggml type) repacked for Blaze's kernels, where the device is a CPU
/// that runs them and the type is one they take (Q5_0 and Q5_1, which candle multiplies
/// with scalar code only, are re-quantized to Q8_0 first: their 5 bits fit in 8 with a
/// per-block error under 1/250 of the block's range, far below their own rounding).
pub(crate) fn packed(w: &QTensor, device: &Device) -> Result<Option<QuantMatrix>> {
    if !device.is_cpu() || !QuantMatrix::supported() {
        return Ok(None);
    }
    let (out, inp) = w.shape().dims2()?;
    Ok(match w.dtype() {
        GgmlDType::Q4_1 => Some(QuantMatrix::from_q4_1(&w.data()?, out, inp)?),
        GgmlDType::Q4_0 => Some(QuantMatrix::from_q4_0(&w.data()?, out, inp)?),
        GgmlDType::Q8_0 => Some(QuantMatrix::from_q8_0(&w.data()?, out, inp)?),
        GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
            let q8 = QTensor::quantize(&w.dequantize(device)?, GgmlDType::Q8_0)?;
            Some(QuantMatrix::from_q8_0(&q8.data()?, out, inp)?)
        }
        _ => None,
    })
}

/// `w` (`[out, in]`, f32) quantized to `dtype`: on Blaze's kernels where [`packed`] takes
/// it, else on candle's, with zero columns up to a whole block (256 values for the
/// k-quants).
pub(crate) fn quantized(w: &Tensor, dtype: GgmlDType) -> Result<Linear> {
    let (_, k) = w.dims2()?;
    let pad = k.next_multiple_of(dtype.block_size()) - k;
    let w = if pad > 0 { w.pad_with_zeros(1, 0, pad)? } else { w.contiguous()? };
    let q = QTensor::quantize(&w, dtype)?;
    if let Some(m) = packed(&q, w.device())? {
        return Ok(Linear::packed(m));
    }
    Ok(Linear::quantized_padded(QMatMul::from_qtensor(q)?, pad))
}

impl Linear {
    /// Quantized weights (or any [`QMatMul`]) for every pass.
    pub(crate) fn quantized(weights: QMatMul) -> Self {
        Self::quantized_padded(weights, 0)
    }

    /// Quantized weights carrying `pad` zero columns past the input width.
    fn quantized_padded(weights: QMatMul, pad: usize) -> Self {
        Self { quantized: Some(Quantized::Candle(weights)), pad, dense_t: None, bias: None }
    }

    /// Weights on Blaze's kernels, for every pass: they beat f32 GEMM at every batch size
    /// (one row to prefills of hundreds), so a dense copy would only cost memory.
    pub(crate) fn packed(weights: QuantMatrix) -> Self {
        Self {
            quantized: Some(Quantized::Packed(Arc::new(weights))),
            pad: 0,
            dense_t: None,
            bias: None,
        }
    }

    /// Dense `[out, in]` weights for every pass.
    pub(crate) fn dense(weights: &Tensor) -> Result<Self> {
        let dense_t = Some(weights.t()?.contiguous()?);
        Ok(Self { quantized: None, pad: 0, dense_t, bias: None })
    }

    /// These quantized weights for small decode steps, and dense `[out, in]` weights for
    /// the other passes.
    pub(crate) fn with_dense(self, weights: &Tensor) -> Result<Self> {
        Ok(Self { dense_t: Some(weights.t()?.contiguous()?), ..self })
    }

    /// Converts the bias to `dtype`, the activations' type.
    pub(crate) fn convert_bias(&mut self, dtype: DType) -> Result<()> {
        if let Some(bias) = &self.bias {
            self.bias = Some(bias.to_dtype(dtype)?);
        }
        Ok(())
    }

    /// Adds `bias` (`[out]`) to every output row.
    pub(crate) fn with_bias(self, bias: Tensor) -> Self {
        Self { bias: Some(bias), ..self }
    }

    /// `x` is `[rows, in]`.
    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let y = self.forward_weights(x, pass)?;
        match &self.bias {
            Some(bias) => Ok(y.broadcast_add(bias)?),
            None => Ok(y),
        }
    }

    fn forward_weights(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match (&self.quantized, &self.dense_t) {
            (Some(q), None) => self.forward_quantized(q, x, pass),
            (Some(q), Some(_)) if pass == Pass::SmallDecode => self.forward_quantized(q, x, pass),
            (_, Some(w)) if w.dtype() == x.dtype() => Ok(x.matmul(w)?),
            // Weights held in f16 or bf16: multiplied in their type, activations stay f32.
            (_, Some(w)) => Ok(x.to_dtype(w.dtype())?.matmul(w)?.to_dtype(x.dtype())?),
            (None, None) => unreachable!("a Linear holds weights"),
        }
    }

    fn forward_quantized(&self, q: &Quantized, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match q {
            Quantized::Packed(m) => {
                let activations =
                    if pass == Pass::Prefill { Activations::Words } else { Activations::Bytes };
                Ok(x.contiguous()?.apply_op1_no_bwd(&m.op(activations))?)
            }
            Quantized::Candle(q) if self.pad == 0 => Ok(q.forward(x)?),
            Quantized::Candle(q) => Ok(q.forward(&x.pad_with_zeros(D::Minus1, 0, self.pad)?)?),
        }
    }

    /// What the weights are, for logs and for grouping projections of one shape.
    pub(crate) fn kind(&self) -> String {
        let quantized = match &self.quantized {
            Some(Quantized::Candle(QMatMul::QTensor(t))) => {
                format!("{:?} {:?}", t.dtype(), t.shape().dims())
            }
            Some(Quantized::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t))) => {
                format!("{:?}", t.shape().dims())
            }
            Some(Quantized::Packed(m)) => format!("packed {} {:?}", m.format_name(), m.shape()),
            None => "-".into(),
        };
        let dense = self.dense_t.as_ref().map(|t| format!("{:?}", t.shape().dims()));
        format!("{quantized} / dense {}", dense.unwrap_or_else(|| "-".into()))
    }

    pub(crate) fn bytes(&self, dense: bool) -> u64 {
        let tensor = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        match (&self.quantized, &self.dense_t) {
            (Some(q), d) if d.is_none() || !dense => match q {
                Quantized::Candle(QMatMul::QTensor(t)) => t.storage_size_in_bytes() as u64,
                Quantized::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => tensor(t),
                Quantized::Packed(m) => m.storage_bytes() as u64,
            },
            (_, Some(w)) => tensor(w),
            (_, None) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Quantized weights multiply like the f32 weights (to quantization error), and each
    /// row of a batch comes out bit for bit as it does alone, so batched greedy decoding
    /// equals unbatched. On AVX-512 VNNI CPUs these are Blaze's kernels, else candle's.
    #[test]
    fn quantized_weights_match_f32_and_are_batch_invariant() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1f32, (64, 576), &device).unwrap();
        let x = Tensor::randn(0f32, 1f32, (5, 576), &device).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        for (dtype, tolerance) in [(GgmlDType::Q8_0, 0.02), (GgmlDType::Q4_1, 0.15)] {
            let linear = quantized(&w, dtype).unwrap();
            let packed = linear.kind().starts_with("packed");
            assert_eq!(packed, QuantMatrix::supported(), "{dtype:?}: {}", linear.kind());
            let got = linear.forward(&x, Pass::SmallDecode).unwrap();
            let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap();
            let (err, scale) = (err.to_scalar::<f32>().unwrap(), scale.to_scalar::<f32>().unwrap());
            assert!(
                err < tolerance * scale,
                "{dtype:?}: error {err} against outputs up to {scale}"
            );
            for row in 0..5 {
                let alone =
                    linear.forward(&x.narrow(0, row, 1).unwrap(), Pass::SmallDecode).unwrap();
                let batched = got.narrow(0, row, 1).unwrap();
                let diff = (alone - batched).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{dtype:?}, row {row}");
            }
        }
    }
}
