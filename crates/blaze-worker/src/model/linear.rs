//! A projection's weights, quantized, dense or both, and how a decode step multiplies by them.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, Module, Tensor};

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
    quantized: Option<QMatMul>,
    /// Zero columns the quantized weights carry past the input width (see [`q8_0_tiled`]);
    /// the input gets as many zeros before it is multiplied.
    pad: usize,
    dense_t: Option<Tensor>,
    bias: Option<Tensor>,
}

/// How much faster the dense copy must time than the quantized weights to be kept. Timings
/// on a busy machine are noisy, and near a tie the verdict flipped between runs of the same
/// worker: SmolLM2-135M's key/value projections at 16 rows timed dense 0.95x to 1.15x the
/// quantized kernel over four starts on the 2-core development machine (every other shape
/// 1.1x to 3x slower dense). The two kernels round differently, so a flip changed greedy
/// answers between pods of one engine ("La femme de France, ..." instead of "The capital
/// of France is Paris."). Keeping a copy only where it is 30% faster makes the verdict
/// stable there, and a copy that saves less than that is not worth its memory.
const DENSE_MARGIN: f64 = 1.3;

/// Input widths candle's tiled quantized kernels take: whole 256-value superblocks.
const TILE_K: usize = 256;

/// Whether candle multiplies Q8_0 weights whose input width is a multiple of 256 with its
/// tiled AVX-512 VNNI kernels (weights repacked 16 output rows at a time, several input
/// rows per pass). Other widths, and CPUs without VNNI, get candle's row-by-row Q8_0
/// kernel, whose cost grows with every input row.
pub(crate) fn q8_0_tiled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `w` (`[out, in]`, f32) quantized to Q8_0, with zero columns up to the next multiple of
/// 256 where [`q8_0_tiled`] holds: the tiled kernels then take it. The zero blocks leave
/// every product as it was; the 576-wide projections of SmolLM2-135M multiply 16 rows
/// 2 to 5 times faster this way than with f32 GEMM or the row-by-row kernel, and one row
/// 2 to 3 times faster, for a third more bytes. Returns the weights and the padding.
pub(crate) fn q8_0_padded(w: &Tensor) -> Result<(QMatMul, usize)> {
    quantized_padded(w, GgmlDType::Q8_0)
}

/// `w` (`[out, in]`, f32) quantized to `dtype`, with zero columns up to a whole block (256
/// values for the k-quants) or, for Q8_0, up to a tile as [`q8_0_padded`] says. Returns
/// the weights and the padding.
pub(crate) fn quantized_padded(w: &Tensor, dtype: GgmlDType) -> Result<(QMatMul, usize)> {
    let (_, k) = w.dims2()?;
    let block = if dtype == GgmlDType::Q8_0 && q8_0_tiled() { TILE_K } else { dtype.block_size() };
    let pad = k.next_multiple_of(block) - k;
    let w = if pad > 0 { w.pad_with_zeros(1, 0, pad)? } else { w.contiguous()? };
    Ok((QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?, pad))
}

impl Linear {
    /// Quantized weights (or any [`QMatMul`]) for every pass.
    pub(crate) fn quantized(weights: QMatMul) -> Self {
        Self::quantized_padded(weights, 0)
    }

    /// Quantized weights carrying `pad` zero columns past the input width.
    pub(crate) fn quantized_padded(weights: QMatMul, pad: usize) -> Self {
        Self { quantized: Some(weights), pad, dense_t: None, bias: None }
    }

    /// Dense `[out, in]` weights for every pass.
    pub(crate) fn dense(weights: &Tensor) -> Result<Self> {
        let dense_t = Some(weights.t()?.contiguous()?);
        Ok(Self { quantized: None, pad: 0, dense_t, bias: None })
    }

    /// `quantized` (with `pad` zero columns) for small decode steps, dense `[out, in]`
    /// weights for the other passes.
    pub(crate) fn dual(quantized: QMatMul, pad: usize, weights: &Tensor) -> Result<Self> {
        let dense_t = Some(weights.t()?.contiguous()?);
        Ok(Self { quantized: Some(quantized), pad, dense_t, bias: None })
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
            (Some(q), None) => self.forward_quantized(q, x),
            (Some(q), Some(_)) if !dense => self.forward_quantized(q, x),
            (_, Some(w)) if w.dtype() == x.dtype() => Ok(x.matmul(w)?),
            // Weights held in f16 or bf16: multiplied in their type, activations stay f32.
            (_, Some(w)) => Ok(x.to_dtype(w.dtype())?.matmul(w)?.to_dtype(x.dtype())?),
            (None, None) => unreachable!("a Linear holds weights"),
        }
    }

    fn forward_quantized(&self, q: &QMatMul, x: &Tensor) -> Result<Tensor> {
        if self.pad == 0 {
            return Ok(q.forward(x)?);
        }
        Ok(q.forward(&x.pad_with_zeros(D::Minus1, 0, self.pad)?)?)
    }

    /// Whether the dense copy beats the quantized weights over `rows` rows (best of three
    /// alternating timings, so a busy machine misleads it less). True without both copies.
    pub(crate) fn dense_is_faster(&self, rows: usize) -> Result<bool> {
        let (Some(q), Some(w)) = (&self.quantized, &self.dense_t) else { return Ok(true) };
        let x = Tensor::randn(0f32, 1f32, (rows, w.dim(0)?), w.device())?;
        let (mut quantized, mut dense) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let start = std::time::Instant::now();
            self.forward_quantized(q, &x)?;
            quantized = quantized.min(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            x.matmul(w)?;
            dense = dense.min(start.elapsed().as_secs_f64());
        }
        tracing::debug!(rows, quantized, dense, "kernel timing");
        Ok(dense * DENSE_MARGIN < quantized)
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Padded Q8_0 weights multiply like the f32 weights (to quantization error), and each
    /// row of a batch comes out bit for bit as it does alone, so batched greedy decoding
    /// equals unbatched.
    #[test]
    fn padded_q8_0_matches_f32_and_is_batch_invariant() {
        let device = Device::Cpu;
        let w = Tensor::randn(0f32, 1f32, (64, 576), &device).unwrap();
        let (q, pad) = q8_0_padded(&w).unwrap();
        assert_eq!(pad, if q8_0_tiled() { 192 } else { 0 }, "576 is 18 blocks of 32");
        let linear = Linear::quantized_padded(q, pad);
        let x = Tensor::randn(0f32, 1f32, (5, 576), &device).unwrap();
        let got = linear.forward(&x, false).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
        let scale = want.abs().unwrap().max_all().unwrap();
        let (err, scale) = (err.to_scalar::<f32>().unwrap(), scale.to_scalar::<f32>().unwrap());
        assert!(err < 0.05 * scale, "error {err} against outputs up to {scale}");
        for row in 0..5 {
            let alone = linear.forward(&x.narrow(0, row, 1).unwrap(), false).unwrap();
            let batched = got.narrow(0, row, 1).unwrap();
            let diff = (alone - batched).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "row {row}");
        }
    }
}
