//! A projection's weights, quantized, dense or both, and how a decode step multiplies by them.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::Result;

/// A projection's weights: quantized, dense, or both (quantized for decode steps of fewer
/// than [`super::DENSE_MIN_ROWS`] sequences, dense for prefill and larger steps).
///
/// The dense copy is held transposed, `[in, out]` and contiguous, and multiplied as is: the
/// GEMM then reads it in place. Held `[out, in]` (candle's layout, multiplied through a
/// transposed view) GEMM packed the whole matrix on every call, a quarter of a 16-sequence
/// decode step's time.
pub struct Linear {
    quantized: Option<QMatMul>,
    dense_t: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    /// Quantized weights (or any [`QMatMul`]) for every pass.
    pub(crate) fn quantized(weights: QMatMul) -> Self {
        Self { quantized: Some(weights), dense_t: None, bias: None }
    }

    /// Dense `[out, in]` weights for every pass.
    pub(crate) fn dense(weights: &Tensor) -> Result<Self> {
        Ok(Self { quantized: None, dense_t: Some(weights.t()?.contiguous()?), bias: None })
    }

    /// `quantized` for small decode steps, dense `[out, in]` weights for the other passes.
    pub(crate) fn dual(quantized: QMatMul, weights: &Tensor) -> Result<Self> {
        let dense_t = Some(weights.t()?.contiguous()?);
        Ok(Self { quantized: Some(quantized), dense_t, bias: None })
    }

    /// Adds `bias` (`[out]`) to every output row.
    pub(crate) fn with_bias(self, bias: Tensor) -> Self {
        Self { bias: Some(bias), ..self }
    }

    /// `x` is `[rows, in]`; `dense` prefers the dense copy.
    pub(crate) fn forward(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        let y = self.forward_weights(x, dense)?;
        match &self.bias {
            Some(bias) => Ok(y.broadcast_add(bias)?),
            None => Ok(y),
        }
    }

    fn forward_weights(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        match (&self.quantized, &self.dense_t) {
            (Some(q), None) => Ok(q.forward(x)?),
            (Some(q), Some(_)) if !dense => Ok(q.forward(x)?),
            (_, Some(w)) => Ok(x.matmul(w)?),
            (None, None) => unreachable!("a Linear holds weights"),
        }
    }

    /// Whether the dense copy beats the quantized weights over `rows` rows (best of three
    /// alternating timings, so a busy machine misleads it less). True without both copies.
    pub(crate) fn dense_is_faster(&self, rows: usize) -> Result<bool> {
        let (Some(q), Some(w)) = (&self.quantized, &self.dense_t) else { return Ok(true) };
        let x = Tensor::randn(0f32, 1f32, (rows, w.dim(0)?), w.device())?;
        let (mut quantized, mut dense) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let start = std::time::Instant::now();
            q.forward(&x)?;
            quantized = quantized.min(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            x.matmul(w)?;
            dense = dense.min(start.elapsed().as_secs_f64());
        }
        Ok(dense < quantized)
    }

    /// What the weights are, for logs and for grouping projections of one shape.
    pub(crate) fn kind(&self) -> String {
        let quantized = match &self.quantized {
            Some(QMatMul::QTensor(t)) => format!("{:?} {:?}", t.dtype(), t.shape().dims()),
            Some(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => format!("{:?}", t.shape().dims()),
            None => "-".into(),
        };
        let dense = self.dense_t.as_ref().map(|t| format!("{:?}", t.shape().dims()));
        format!("{quantized} / dense {}", dense.unwrap_or_else(|| "-".into()))
    }

    pub(crate) fn bytes(&self, dense: bool) -> u64 {
        let tensor = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        match (&self.quantized, &self.dense_t) {
            (Some(q), d) if d.is_none() || !dense => match q {
                QMatMul::QTensor(t) => t.storage_size_in_bytes() as u64,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor(t),
            },
            (_, Some(w)) => tensor(w),
            (_, None) => 0,
        }
    }

    /// Drops the dense copy when quantized weights remain to multiply by.
    pub(crate) fn drop_dense_copy(&mut self) {
        if self.quantized.is_some() {
            self.dense_t = None;
        }
    }
}
