//! Quantized weights multiplied without widening them, on CPUs with AVX-512 VNNI.
//!
//! Weights are ggml blocks of 32 values: Q4_1 (`d * q + m`, `q` in 0..16), Q4_0
//! (`d * (q - 8)`, held as Q4_1 with `m = -8 d`, which f16 holds exactly) and Q8_0
//! (`d * q`, `q` a signed byte, held as the unsigned byte `q + 128`). Activations are
//! quantized per block to signed bytes (or 16-bit words, for prompts), `a = da * p`, with
//! `sa = da * Σp`. A block's dot product is then `d * da * Σ q p + m * sa` (Q8_0:
//! `d * da * (Σ (q + 128) p - 128 Σp)`, exact in integers).
//!
//! The weights are repacked at load so that the 16 lanes of a vector are 16 output rows:
//! for each group of 16 rows and each block, four consecutive values of each row sit next
//! to each other (`vpdpbusd` multiplies four byte pairs per 32-bit lane), and for 4-bit
//! weights two such 4-value chunks share each byte (low and high nibble). One vector of
//! 16 block scales then scales the 16 sums, with no horizontal sums. Every activation row
//! of a call (up to four at a time) is multiplied by a group while the group sits in the
//! first-level cache, so the weights are read from memory once per call.
//!
//! A decode step of one sequence reads 20 bytes per 32 Q4_1 weights, where candle's Q8_0
//! kernels (the worker used to widen Q4_1 to Q8_0, as candle has only scalar Q4_1 code)
//! read 34, plus zero padding up to a multiple of 256 inputs.

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

/// Values per block.
pub const BLOCK: usize = 32;

/// Output rows per vector: one per 32-bit lane of an AVX-512 register.
const LANES: usize = 16;

/// Activation rows multiplied per pass over a group of weights.
const ROW_TILE: usize = 4;

/// How the weights' values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Two 4-bit values per byte, `d * q + m`.
    Nibbles,
    /// One unsigned byte per value, `d * (q - 128)`.
    Bytes,
}

impl Format {
    /// Bytes a block of one row takes in the packed values.
    fn block_bytes(self) -> usize {
        match self {
            Format::Nibbles => BLOCK / 2,
            Format::Bytes => BLOCK,
        }
    }
}

/// Quantized weights, `[out, in]` with `in` a multiple of [`BLOCK`], packed for the
/// kernels.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    format: Format,
    out: usize,
    inp: usize,
    /// Per group of [`LANES`] rows and per block, the rows' values interleaved by four
    /// (see the module's documentation).
    values: Vec<u8>,
    /// Per group and block, the [`LANES`] rows' scales, f16 bits.
    d: Vec<u16>,
    /// Per group and block, the rows' offsets (4-bit formats only), f16 bits.
    m: Vec<u16>,
}

/// One source block: scale, offset (f16 bits) and the 32 values as unsigned integers.
type Block = (u16, u16, [u8; BLOCK]);

fn error(what: String) -> candle_core::Error {
    candle_core::Error::Msg(what)
}

impl QuantMatrix {
    /// Whether this CPU runs the kernels: x86-64 with AVX-512 (F, BW) and VNNI, and F16C.
    pub fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Weights from ggml Q4_1 blocks (`d`, `m`, 16 bytes of nibbles), rows one after the
    /// other, as a GGUF file stores them.
    pub fn from_q4_1(data: &[u8], out: usize, inp: usize) -> candle_core::Result<Self> {
        Self::pack(Format::Nibbles, data, out, inp, 20, |b| {
            (u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]]), nibbles(&b[4..20]))
        })
    }

    /// Weights from ggml Q4_0 blocks (`d`, 16 bytes of nibbles: `d * (q - 8)`).
    pub fn from_q4_0(data: &[u8], out: usize, inp: usize) -> candle_core::Result<Self> {
        Self::pack(Format::Nibbles, data, out, inp, 18, |b| {
            let d = u16::from_le_bytes([b[0], b[1]]);
            // -8 d: a power of two times d, exact in f16 short of overflow.
            let m = f16::from_f32(-8.0 * f16::from_bits(d).to_f32()).to_bits();
            (d, m, nibbles(&b[2..18]))
        })
    }

    /// Weights from ggml Q8_0 blocks (`d`, 32 signed bytes: `d * q`).
    pub fn from_q8_0(data: &[u8], out: usize, inp: usize) -> candle_core::Result<Self> {
        Self::pack(Format::Bytes, data, out, inp, 34, |b| {
            let mut values = [0u8; BLOCK];
            for (v, q) in values.iter_mut().zip(&b[2..34]) {
                *v = (*q as i8 as i16 + 128) as u8;
            }
            (u16::from_le_bytes([b[0], b[1]]), 0, values)
        })
    }

    fn pack(
        format: Format,
        data: &[u8],
        out: usize,
        inp: usize,
        block_bytes: usize,
        read: impl Fn(&[u8]) -> Block,
    ) -> candle_core::Result<Self> {
        if !inp.is_multiple_of(BLOCK) || inp == 0 {
            return Err(error(format!(
                "quantized rows of {inp} values: not whole blocks of {BLOCK}"
            )));
        }
        let nb = inp / BLOCK;
        if data.len() != out * nb * block_bytes {
            return Err(error(format!(
                "{} bytes for a [{out}, {inp}] matrix of {block_bytes}-byte blocks, expected {}",
                data.len(),
                out * nb * block_bytes
            )));
        }
        let groups = out.div_ceil(LANES);
        let group_block = LANES * format.block_bytes();
        let mut matrix = Self {
            format,
            out,
            inp,
            values: vec![0; groups * nb * group_block],
            d: vec![0; groups * nb * LANES],
            m: vec![0; if format == Format::Nibbles { groups * nb * LANES } else { 0 }],
        };
        for (o, row) in data.chunks_exact(nb * block_bytes).enumerate() {
            let (g, lane) = (o / LANES, o % LANES);
            for (j, source) in row.chunks_exact(block_bytes).enumerate() {
                let (d, m, values) = read(source);
                let at = (g * nb + j) * LANES + lane;
                matrix.d[at] = d;
                if format == Format::Nibbles {
                    matrix.m[at] = m;
                }
                let packed = &mut matrix.values[(g * nb + j) * group_block..][..group_block];
                for (k, v) in values.iter().enumerate() {
                    let (chunk, e) = (k / 4, k % 4);
                    match format {
                        // Chunks 2p and 2p + 1 share 64 bytes: low and high nibbles.
                        Format::Nibbles => {
                            packed[(chunk / 2) * 64 + lane * 4 + e] |= v << (4 * (chunk % 2));
                        }
                        Format::Bytes => packed[chunk * 64 + lane * 4 + e] = *v,
                    }
                }
            }
        }
        Ok(matrix)
    }

    /// How the values are held: `4-bit` or `8-bit`.
    pub fn format_name(&self) -> &'static str {
        match self.format {
            Format::Nibbles => "4-bit",
            Format::Bytes => "8-bit",
        }
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Bytes the weights take (and a decode step reads).
    pub fn storage_bytes(&self) -> usize {
        self.values.len() + 2 * (self.d.len() + self.m.len())
    }

    /// The weights as f32, `[out, in]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.inp / BLOCK;
        let group_block = LANES * self.format.block_bytes();
        let mut w = Vec::with_capacity(self.out * self.inp);
        for o in 0..self.out {
            let (g, lane) = (o / LANES, o % LANES);
            for j in 0..nb {
                let at = (g * nb + j) * LANES + lane;
                let d = f16::from_bits(self.d[at]).to_f32();
                let packed = &self.values[(g * nb + j) * group_block..][..group_block];
                for k in 0..BLOCK {
                    let (chunk, e) = (k / 4, k % 4);
                    w.push(match self.format {
                        Format::Nibbles => {
                            let byte = packed[(chunk / 2) * 64 + lane * 4 + e];
                            let q = (byte >> (4 * (chunk % 2))) & 0x0f;
                            d * f32::from(q) + f16::from_bits(self.m[at]).to_f32()
                        }
                        Format::Bytes => d * (f32::from(packed[chunk * 64 + lane * 4 + e]) - 128.0),
                    });
                }
            }
        }
        w
    }

    /// `y = x Wᵀ` for `x` of `rows` rows of `in` values; `y` gets `rows` rows of `out`.
    /// `activations` says what `x` is quantized to per block: bytes (four products per
    /// instruction and lane) or 16-bit words (two, with 128 times finer steps). Fails
    /// where the CPU lacks the instructions ([`Self::supported`]).
    pub fn matmul(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        activations: Activations,
    ) -> candle_core::Result<()> {
        if !Self::supported() {
            return Err(error("quantized kernels need AVX-512 VNNI".into()));
        }
        if x.len() != rows * self.inp || y.len() != rows * self.out {
            return Err(error(format!(
                "{rows} rows: {} inputs and {} outputs for a [{}, {}] matrix",
                x.len(),
                y.len(),
                self.out,
                self.inp
            )));
        }
        let bytes = (activations == Activations::Bytes).then(|| Quantized::<i8>::quantize(x));
        let words = (activations == Activations::Words).then(|| Quantized::<i16>::quantize(x));
        let y = SharedRows { ptr: y.as_mut_ptr(), rows, width: self.out };
        let groups = self.out.div_ceil(LANES);
        crate::pool::pool().run(groups, &|groups| {
            // SAFETY: the CPU has the instructions (checked above), the shapes were checked
            // above, and each call writes only the output columns of its own groups.
            #[allow(unsafe_code)]
            unsafe {
                match (&bytes, &words) {
                    (Some(a), _) => x86::groups(self, a, groups, y),
                    (_, Some(a)) => x86::groups(self, a, groups, y),
                    (None, None) => unreachable!("activations are bytes or words"),
                }
            }
        });
        Ok(())
    }

    /// This matrix as a candle op with `activations` (see [`Self::matmul`]).
    pub fn op(&self, activations: Activations) -> MatMul<'_> {
        MatMul { weights: self, activations }
    }
}

/// How a matmul takes its activations (see [`QuantMatrix::matmul`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Quantized per block to signed bytes.
    Bytes,
    /// Quantized per block to signed 16-bit words (an error of 1/65534 of the block's
    /// range, against 1/254 for bytes): two products per instruction and lane.
    Words,
}

/// A [`QuantMatrix`] multiplying as a candle op: `x.apply_op1_no_bwd(&m.op(..))`.
pub struct MatMul<'a> {
    weights: &'a QuantMatrix,
    activations: Activations,
}

/// The 32 values of a 4-bit block: low nibbles first, then high nibbles (ggml's order).
fn nibbles(qs: &[u8]) -> [u8; BLOCK] {
    let mut values = [0u8; BLOCK];
    for (i, q) in qs.iter().enumerate() {
        values[i] = q & 0x0f;
        values[i + BLOCK / 2] = q >> 4;
    }
    values
}

/// `x` quantized per block to signed bytes (`i8`) or words (`i16`): `x ≈ d * q`, with
/// `sum = Σq` and `s = d * Σq`. Words are stored with the middle two of every four values
/// swapped, so that each 32-bit word holds the pair one `vpdpwssd` lane multiplies
/// (values 0 and 2, then 1 and 3).
struct Quantized<T> {
    qs: Vec<T>,
    d: Vec<f32>,
    s: Vec<f32>,
    sum: Vec<i32>,
}

impl<T: Default + Clone> Quantized<T> {
    fn quantize(x: &[f32]) -> Self {
        let blocks = x.len() / BLOCK;
        let mut a = Self {
            qs: vec![T::default(); x.len()],
            d: vec![0.0; blocks],
            s: vec![0.0; blocks],
            sum: vec![0; blocks],
        };
        let max = if std::mem::size_of::<T>() == 1 { 127.0 } else { 32767.0 };
        // SAFETY: called only where `QuantMatrix::supported` holds; the buffers hold
        // `blocks` blocks of `T`, one or two bytes.
        #[allow(unsafe_code)]
        unsafe {
            x86::quantize(
                x,
                a.qs.as_mut_ptr().cast(),
                std::mem::size_of::<T>(),
                max,
                &mut a.d,
                &mut a.s,
                &mut a.sum,
            )
        };
        a
    }
}

/// The output, written by several threads at once, each its own columns.
#[derive(Clone, Copy)]
struct SharedRows {
    ptr: *mut f32,
    rows: usize,
    width: usize,
}

// SAFETY: the pointer is only written through at disjoint indices (each thread its own
// output columns), and the buffer outlives the pool's call.
#[allow(unsafe_code)]
unsafe impl Send for SharedRows {}
#[allow(unsafe_code)]
unsafe impl Sync for SharedRows {}

impl CustomOp1 for MatMul<'_> {
    fn name(&self) -> &'static str {
        "quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            return Err(error(format!(
                "quantized matmul of {:?} activations: f32 only",
                storage.dtype()
            )));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(error("quantized matmul of a non-contiguous tensor".into()));
        };
        let m = self.weights;
        let dims = layout.shape().dims();
        if dims.last() != Some(&m.inp) {
            return Err(error(format!("quantized matmul of {dims:?} by [{}, {}]", m.out, m.inp)));
        }
        let rows = layout.shape().elem_count() / m.inp;
        let mut y = vec![0f32; rows * m.out];
        m.matmul(&data[start..end], rows, &mut y, self.activations)?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = m.out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// Quantizes every block of `x` to `width`-byte integers within ±`max` at `out`, with
    /// each block's scale, scaled sum and sum.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F and BW; `out` holds `x.len()` integers of `width` (1 or 2)
    /// bytes, and `d`, `s` and `sum` a value per block.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize(
        x: &[f32],
        out: *mut u8,
        width: usize,
        max: f32,
        d: &mut [f32],
        s: &mut [f32],
        sum: &mut [i32],
    ) {
        // Words: values 0, 2, 1, 3 of every four (see `Quantized`).
        let pairs = _mm512_set_epi32(15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0);
        for (b, block) in x.chunks_exact(BLOCK).enumerate() {
            // SAFETY: a block is 32 values, two vectors; the buffers hold block `b`.
            unsafe {
                let v0 = _mm512_loadu_ps(block.as_ptr());
                let v1 = _mm512_loadu_ps(block.as_ptr().add(16));
                let amax =
                    _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
                let scale = amax / max;
                let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
                // Rounded to nearest (even on ties); within ±max by construction.
                let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));
                let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
                let at = out.add(b * BLOCK * width);
                if width == 1 {
                    _mm_storeu_si128(at.cast(), _mm512_cvtepi32_epi8(q0));
                    _mm_storeu_si128(at.add(16).cast(), _mm512_cvtepi32_epi8(q1));
                } else {
                    let (p0, p1) =
                        (_mm512_permutexvar_epi32(pairs, q0), _mm512_permutexvar_epi32(pairs, q1));
                    _mm256_storeu_si256(at.cast(), _mm512_cvtepi32_epi16(p0));
                    _mm256_storeu_si256(at.add(32).cast(), _mm512_cvtepi32_epi16(p1));
                }
                let total = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
                d[b] = scale;
                sum[b] = total;
                s[b] = scale * total as f32;
            }
        }
    }

    /// An activation integer type: how a tile multiplies a chunk of four values of 16 rows
    /// by a block's activations.
    pub(super) trait Width: Copy + Default {
        /// Adds the products of chunk `chunk` (0..8) of activation block `block` and
        /// `lanes` (one row's four weights per lane) to `sums`.
        ///
        /// # Safety
        ///
        /// The CPU has AVX-512 F, BW and VNNI; `block` is within `a`.
        unsafe fn dot(
            sums: &mut [__m512i; 2],
            lanes: __m512i,
            a: &Quantized<Self>,
            block: usize,
            chunk: usize,
        );
    }

    impl Width for i8 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn dot(
            sums: &mut [__m512i; 2],
            lanes: __m512i,
            a: &Quantized<i8>,
            block: usize,
            chunk: usize,
        ) {
            // SAFETY: as the trait's.
            let at = unsafe { a.qs.as_ptr().add(block * BLOCK + chunk * 4) };
            // Four activation bytes in every lane; two sums shorten the dependency chains.
            let p = _mm512_set1_epi32(unsafe { at.cast::<i32>().read_unaligned() });
            sums[chunk % 2] = _mm512_dpbusd_epi32(sums[chunk % 2], lanes, p);
        }
    }

    impl Width for i16 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn dot(
            sums: &mut [__m512i; 2],
            lanes: __m512i,
            a: &Quantized<i16>,
            block: usize,
            chunk: usize,
        ) {
            // SAFETY: as the trait's.
            let at = unsafe { a.qs.as_ptr().add(block * BLOCK + chunk * 4) };
            // Words are stored as values 0, 2, 1, 3 (see `Quantized`): pair them with the
            // weights' bytes 0 and 2, then 1 and 3, widened to words.
            let (p02, p13) = unsafe {
                (at.cast::<i32>().read_unaligned(), at.add(2).cast::<i32>().read_unaligned())
            };
            let w02 = _mm512_and_si512(lanes, _mm512_set1_epi32(0x00ff_00ff));
            let w13 = _mm512_srli_epi16::<8>(lanes);
            sums[0] = _mm512_dpwssd_epi32(sums[0], w02, _mm512_set1_epi32(p02));
            sums[1] = _mm512_dpwssd_epi32(sums[1], w13, _mm512_set1_epi32(p13));
        }
    }

    /// Output columns of `groups` (of [`LANES`] rows each) for every row of `y`.
    ///
    /// # Safety
    ///
    /// The CPU has AVX-512 F, BW and VNNI and F16C; `a` and `y` match `m`'s shape; no
    /// other thread writes these columns of `y`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) unsafe fn groups<T: Width>(
        m: &QuantMatrix,
        a: &Quantized<T>,
        groups: Range<usize>,
        y: SharedRows,
    ) {
        for g in groups {
            let mut r = 0;
            while r < y.rows {
                // SAFETY: as this function's.
                unsafe {
                    match y.rows - r {
                        1 => tile::<T, 1>(m, a, g, r, y),
                        2 => tile::<T, 2>(m, a, g, r, y),
                        3 => tile::<T, 3>(m, a, g, r, y),
                        _ => tile::<T, ROW_TILE>(m, a, g, r, y),
                    }
                }
                r += ROW_TILE;
            }
        }
    }

    /// 16 rows' four values `4 * chunk..` of the block at `at` (in units of 16 rows'
    /// blocks), one row per lane, as bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn chunk_lanes(m: &QuantMatrix, at: usize, chunk: usize) -> __m512i {
        // SAFETY: the caller keeps `at` within the weights, and `chunk` below 8.
        unsafe {
            match m.format {
                Format::Nibbles => {
                    let v = _mm512_loadu_si512(
                        m.values.as_ptr().add(at * BLOCK / 2 + (chunk / 2) * 64).cast(),
                    );
                    let low = _mm512_set1_epi8(0x0f);
                    if chunk.is_multiple_of(2) {
                        _mm512_and_si512(v, low)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v), low)
                    }
                }
                Format::Bytes => {
                    _mm512_loadu_si512(m.values.as_ptr().add(at * BLOCK + chunk * 64).cast())
                }
            }
        }
    }

    /// Writes `sums[t]` to lanes of group `g` in row `r + t` of `y`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(
        sums: [__m512; R],
        m: &QuantMatrix,
        g: usize,
        r: usize,
        y: SharedRows,
    ) {
        let valid = (m.out - g * LANES).min(LANES);
        let mask: __mmask16 = if valid == LANES { !0 } else { (1u16 << valid) - 1 };
        for (t, sum) in sums.into_iter().enumerate() {
            // SAFETY: row `r + t` and the `valid` columns from `g * LANES` are within `y`.
            unsafe { _mm512_mask_storeu_ps(y.ptr.add((r + t) * y.width + g * LANES), mask, sum) };
        }
    }

    /// Group `g` times rows `r..r + R`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn tile<T: Width, const R: usize>(
        m: &QuantMatrix,
        a: &Quantized<T>,
        g: usize,
        r: usize,
        y: SharedRows,
    ) {
        let nb = m.inp / BLOCK;
        let mut acc = [_mm512_setzero_ps(); R];
        for j in 0..nb {
            let at = (g * nb + j) * LANES;
            // SAFETY: group `g`, block `j` and rows `r..r + R` are within the buffers (the
            // caller checked the shapes).
            unsafe {
                let mut sums = [[_mm512_setzero_si512(); 2]; R];
                for chunk in 0..BLOCK / 4 {
                    let lanes = chunk_lanes(m, at, chunk);
                    for (t, sums) in sums.iter_mut().enumerate() {
                        T::dot(sums, lanes, a, (r + t) * nb + j, chunk);
                    }
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(m.d.as_ptr().add(at).cast()));
                for (t, [first, second]) in sums.into_iter().enumerate() {
                    let b = (r + t) * nb + j;
                    let mut dots = _mm512_add_epi32(first, second);
                    if m.format == Format::Bytes {
                        // Σ (q + 128) p - 128 Σp = Σ q p, exactly.
                        dots = _mm512_sub_epi32(
                            dots,
                            _mm512_set1_epi32(128 * *a.sum.get_unchecked(b)),
                        );
                    }
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(*a.d.get_unchecked(b)));
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), scale, acc[t]);
                    if m.format == Format::Nibbles {
                        let offset =
                            _mm512_cvtph_ps(_mm256_loadu_si256(m.m.as_ptr().add(at).cast()));
                        acc[t] =
                            _mm512_fmadd_ps(offset, _mm512_set1_ps(*a.s.get_unchecked(b)), acc[t]);
                    }
                }
            }
        }
        // SAFETY: as this function's.
        unsafe { store(acc, m, g, r, y) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code)]
mod x86 {
    use super::*;

    pub(super) unsafe fn quantize(
        _: &[f32],
        _: *mut u8,
        _: usize,
        _: f32,
        _: &mut [f32],
        _: &mut [f32],
        _: &mut [i32],
    ) {
        unreachable!("no quantized kernels on this architecture")
    }

    pub(super) unsafe fn groups<T>(
        _: &QuantMatrix,
        _: &Quantized<T>,
        _: Range<usize>,
        _: SharedRows,
    ) {
        unreachable!("no quantized kernels on this architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator: the tests need no randomness crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }

        fn unit(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    /// Random blocks as a GGUF file holds them: Q4_1 (`d`, `m`, nibbles), Q4_0 (`d`,
    /// nibbles) or Q8_0 (`d`, signed bytes).
    fn blocks(rng: &mut Lcg, kind: &str, out: usize, inp: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for _ in 0..out * inp / BLOCK {
            data.extend(f16::from_f32(0.01 + 0.02 * rng.unit().abs()).to_le_bytes());
            match kind {
                "q4_1" => {
                    data.extend(f16::from_f32(-0.1 * rng.unit().abs()).to_le_bytes());
                    data.extend((0..16).map(|_| rng.next() as u8));
                }
                "q4_0" => data.extend((0..16).map(|_| rng.next() as u8)),
                _ => data.extend((0..32).map(|_| (rng.next() % 255) as u8 ^ 0x80)),
            }
        }
        data
    }

    fn matrix(kind: &str, data: &[u8], out: usize, inp: usize) -> QuantMatrix {
        match kind {
            "q4_1" => QuantMatrix::from_q4_1(data, out, inp),
            "q4_0" => QuantMatrix::from_q4_0(data, out, inp),
            _ => QuantMatrix::from_q8_0(data, out, inp),
        }
        .unwrap()
    }

    fn reference(w: &[f32], x: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let (xr, wo) = (&x[r * inp..(r + 1) * inp], &w[o * inp..(o + 1) * inp]);
                let dot: f64 = xr.iter().zip(wo).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                y[r * out + o] = dot as f32;
            }
        }
        y
    }

    /// Products agree with f32 products of the same weights: to the activations'
    /// quantization error when they are quantized, to f32 rounding when not; for each
    /// format, for row counts around the row tile and an
    /// output count that is not a whole number of lane groups.
    #[test]
    fn products_match_f32_products_of_the_same_weights() {
        if !QuantMatrix::supported() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let (out, inp) = (72, 576);
        let mut rng = Lcg(7);
        for kind in ["q4_1", "q4_0", "q8_0"] {
            let m = matrix(kind, &blocks(&mut rng, kind, out, inp), out, inp);
            let w = m.dequantize();
            for (activations, tolerance) in [(Activations::Bytes, 1e-2), (Activations::Words, 1e-4)]
            {
                for rows in [1, 2, 3, 4, 5, 9] {
                    let x: Vec<f32> = (0..rows * inp).map(|_| rng.unit()).collect();
                    let mut y = vec![0f32; rows * out];
                    m.matmul(&x, rows, &mut y, activations).unwrap();
                    let want = reference(&w, &x, rows, out, inp);
                    let scale = want.iter().fold(0f32, |s, v| s.max(v.abs()));
                    for (i, (got, want)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (got - want).abs() < tolerance * scale,
                            "{kind}, {activations:?}, rows {rows}, output {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// A row's products do not depend on the other rows of the call, so batched greedy
    /// decoding equals unbatched.
    #[test]
    fn rows_come_out_alone_as_in_a_batch() {
        if !QuantMatrix::supported() {
            return;
        }
        let (out, inp) = (40, 256);
        let mut rng = Lcg(11);
        let all = [Activations::Bytes, Activations::Words];
        for (kind, activations) in ["q4_1", "q8_0"].into_iter().flat_map(|k| all.map(|a| (k, a))) {
            let m = matrix(kind, &blocks(&mut rng, kind, out, inp), out, inp);
            let rows = 11;
            let x: Vec<f32> = (0..rows * inp).map(|_| rng.unit()).collect();
            let mut batch = vec![0f32; rows * out];
            m.matmul(&x, rows, &mut batch, activations).unwrap();
            for r in 0..rows {
                let mut alone = vec![0f32; out];
                m.matmul(&x[r * inp..(r + 1) * inp], 1, &mut alone, activations).unwrap();
                assert_eq!(
                    alone,
                    batch[r * out..(r + 1) * out],
                    "{kind}, {activations:?}, row {r}"
                );
            }
        }
    }

    /// Each format dequantizes as ggml defines it.
    #[test]
    fn blocks_dequantize_as_ggml_defines_them() {
        let half = f16::from_f32(0.5).to_le_bytes();
        let nibbles: Vec<u8> = (0..16u8).map(|i| i | (15 - i) << 4).collect();
        let q4_0 = [&half[..], &nibbles].concat();
        let want: Vec<f32> = (0..16)
            .map(|i| 0.5 * (i as f32 - 8.0))
            .chain((0..16).map(|i| 0.5 * (7.0 - i as f32)))
            .collect();
        assert_eq!(QuantMatrix::from_q4_0(&q4_0, 1, 32).unwrap().dequantize(), want);

        let q4_1 = [&half[..], &f16::from_f32(-1.0).to_le_bytes(), &nibbles].concat();
        let want: Vec<f32> = (0..16)
            .map(|i| 0.5 * i as f32 - 1.0)
            .chain((0..16).map(|i| 0.5 * (15 - i) as f32 - 1.0))
            .collect();
        assert_eq!(QuantMatrix::from_q4_1(&q4_1, 1, 32).unwrap().dequantize(), want);

        let bytes: Vec<u8> = (0..32i32).map(|i| (i * 8 - 127) as i8 as u8).collect();
        let q8_0 = [&half[..], &bytes].concat();
        let want: Vec<f32> = (0..32i32).map(|i| 0.5 * (i * 8 - 127) as f32).collect();
        assert_eq!(QuantMatrix::from_q8_0(&q8_0, 1, 32).unwrap().dequantize(), want);
    }

    #[test]
    fn wrong_sizes_are_refused_with_the_shapes() {
        let err = QuantMatrix::from_q4_1(&[0; 20], 1, 48).unwrap_err().to_string();
        assert!(err.contains("48 values"), "{err}");
        let err = QuantMatrix::from_q4_1(&[0; 19], 1, 32).unwrap_err().to_string();
        assert!(err.contains("19 bytes") && err.contains("expected 20"), "{err}");
    }
}
