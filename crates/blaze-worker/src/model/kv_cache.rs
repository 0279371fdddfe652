//! One sequence's keys and values, per layer, in buffers that grow by doubling: a decode
//! step writes its new position in place instead of concatenating (copying) the whole cache,
//! which at a thousand positions moved about as many bytes per step as the weights.

use candle_core::Tensor;

use super::kv_pool::Slot;
use crate::Result;

/// Positions a layer's buffers hold at first; they double when full.
pub(crate) const FIRST_CAPACITY: usize = 64;

/// The keys and values one sequence has produced so far, per layer: in buffers of its own,
/// or in a slot of a [`KvPool`](super::KvPool). Not `Clone`: its buffers are written in
/// place, and a clone would share them.
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer, `[1, kv_heads, capacity, head_dim]` keys and values; the first `len`
    /// positions are filled. Empty when `slot` holds them.
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(crate) len: usize,
    /// Where the keys and values are when they are in a pool.
    pub(crate) slot: Option<Slot>,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the cache occupies (its buffers' capacity, or its slot's).
    pub fn bytes(&self) -> usize {
        if let Some(slot) = &self.slot {
            return slot.pool.slot_bytes();
        }
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Fills this empty cache's first `len` positions from `blocks` (per block, per layer,
    /// keys and values `[1, kv_heads, block, head_dim]`, consecutive): straight into its
    /// slot when it has one, else into buffers of its own with room for `len + more`
    /// positions, so that the prefill of the rest does not grow them. After an error the
    /// cache may hold some of the positions: [`Self::clear`] it.
    pub(crate) fn fill_from_blocks(
        &mut self,
        blocks: &[&[(Tensor, Tensor)]],
        len: usize,
        more: usize,
    ) -> Result<()> {
        debug_assert!(self.is_empty(), "blocks go into an empty cache");
        let Some(first) = blocks.first() else { return Ok(()) };
        if self.slot.is_none() {
            let capacity = (len + more).next_power_of_two().max(FIRST_CAPACITY);
            self.layers = (first.iter())
                .map(|(k0, _)| {
                    let (b, h, _, d) = k0.dims4()?;
                    let keys = Tensor::zeros((b, h, capacity, d), k0.dtype(), k0.device())?;
                    let values = keys.zeros_like()?;
                    Ok(Some((keys, values)))
                })
                .collect::<Result<_>>()?;
        }
        for block in blocks {
            let Some((k0, _)) = block.first() else { break };
            let n = k0.dim(2)?.min(len - self.len);
            if n == 0 {
                break;
            }
            for (layer, (k, v)) in block.iter().enumerate() {
                if n == k.dim(2)? {
                    self.append(layer, k, v)?;
                } else {
                    let (k, v) =
                        (k.narrow(2, 0, n)?.contiguous()?, v.narrow(2, 0, n)?.contiguous()?);
                    self.append(layer, &k, &v)?;
                }
            }
            self.len += n;
        }
        Ok(())
    }

    /// Forgets every position, keeping the buffers (or the slot) for the next ones.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Copies of positions `start..start + n` of every layer's keys and values.
    pub(crate) fn copy_span(&self, start: usize, n: usize) -> Result<Vec<(Tensor, Tensor)>> {
        if let Some(slot) = &self.slot {
            return slot.pool.copy_span(slot.index, start, n);
        }
        self.layers
            .iter()
            .map(|layer| {
                let Some((k, v)) = layer else {
                    return Err(crate::Error::Unsupported("a layer without keys".into()));
                };
                Ok((k.narrow(2, start, n)?.contiguous()?, v.narrow(2, start, n)?.contiguous()?))
            })
            .collect()
    }

    /// Writes `k` and `v` (`[1, kv_heads, n, head_dim]`, contiguous) at positions
    /// `len..len + n` of `layer` and returns views of positions `0..len + n`. The caller
    /// advances `len` once every layer has its new positions.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(slot) = &self.slot {
            return slot.pool.append(slot.index, layer, self.len, k, v);
        }
        let (pos, n) = (self.len, k.dim(2)?);
        let need = pos + n;
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(Ok(0), |(k, _)| k.dim(2))?;
        if need > capacity {
            let capacity = need.next_power_of_two().max(FIRST_CAPACITY).max(capacity * 2);
            let grow = |old: Option<&Tensor>, like: &Tensor| -> Result<Tensor> {
                let (b, h, _, d) = like.dims4()?;
                let buffer = Tensor::zeros((b, h, capacity, d), like.dtype(), like.device())?;
                if let Some(old) = old.filter(|_| pos > 0) {
                    buffer.slice_set(&old.narrow(2, 0, pos)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            let keys = grow(slot.as_ref().map(|(k, _)| k), k)?;
            let values = grow(slot.as_ref().map(|(_, v)| v), v)?;
            *slot = Some((keys, values));
        }
        let Some((keys, values)) = slot.as_ref() else { unreachable!("filled above") };
        keys.slice_set(k, 2, pos)?;
        values.slice_set(v, 2, pos)?;
        Ok((keys.narrow(2, 0, need)?, values.narrow(2, 0, need)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Appending a prompt and then one position at a time, across two growths, gives the
    /// same keys and values as concatenating everything.
    #[test]
    fn appends_equal_concatenation_across_growth() {
        let device = Device::Cpu;
        let mut cache = KvCache::default();
        let mut all_k: Vec<Tensor> = Vec::new();
        let mut all_v: Vec<Tensor> = Vec::new();
        for n in std::iter::once(50).chain(std::iter::repeat_n(1, 100)) {
            let k = Tensor::randn(0f32, 1f32, (1, 2, n, 4), &device).unwrap();
            let v = Tensor::randn(0f32, 1f32, (1, 2, n, 4), &device).unwrap();
            let (got_k, got_v) = cache.append(0, &k, &v).unwrap();
            cache.len += n;
            all_k.push(k);
            all_v.push(v);
            let want_k = Tensor::cat(&all_k, 2).unwrap();
            let want_v = Tensor::cat(&all_v, 2).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
            };
            assert_eq!(diff(&got_k, &want_k), 0.0, "keys at {}", cache.len);
            assert_eq!(diff(&got_v, &want_v), 0.0, "values at {}", cache.len);
        }
        assert_eq!(cache.bytes(), 2 * 2 * 256 * 4 * 4, "capacity doubled 64 -> 128 -> 256");
    }

    /// Spans copied out of one cache and assembled into another give the same keys and
    /// values, a partial last block included.
    #[test]
    fn blocks_copied_out_assemble_into_the_same_prefix() {
        let device = Device::Cpu;
        let mut source = KvCache::default();
        for layer in 0..2 {
            let k = Tensor::randn(0f32, 1f32, (1, 2, 40, 4), &device).unwrap();
            let v = Tensor::randn(0f32, 1f32, (1, 2, 40, 4), &device).unwrap();
            source.append(layer, &k, &v).unwrap();
        }
        source.len = 40;
        let spans = [source.copy_span(0, 16).unwrap(), source.copy_span(16, 16).unwrap()];
        let blocks: Vec<&[(Tensor, Tensor)]> = spans.iter().map(Vec::as_slice).collect();
        let mut rebuilt = KvCache::default();
        rebuilt.fill_from_blocks(&blocks, 27, 13).unwrap();
        assert_eq!(rebuilt.len(), 27);
        assert_eq!(rebuilt.bytes(), 2 * 2 * 2 * 64 * 4 * 4, "room for 40 rounds up to 64");
        for layer in 0..2 {
            let (want_k, want_v) = source.layers[layer].as_ref().unwrap();
            let (got_k, got_v) = rebuilt.layers[layer].as_ref().unwrap();
            for (want, got) in [(want_k, got_k), (want_v, got_v)] {
                let want = want.narrow(2, 0, 27).unwrap();
                let got = got.narrow(2, 0, 27).unwrap();
                let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "layer {layer}");
            }
        }

        // The same blocks into a slot of a pool, the second slot so that the first's
        // positions are not where they land; the pool was grown for the prompt up front.
        let pool = crate::model::KvPool::new(2, 2, 4, candle_core::DType::F32, &device, 512, 4);
        let _first = pool.cache();
        let mut slotted = pool.cache_for(40).unwrap();
        let bytes = slotted.bytes();
        slotted.fill_from_blocks(&blocks, 27, 13).unwrap();
        assert_eq!((slotted.len(), slotted.bytes()), (27, bytes), "no growth while filling");
        assert_eq!(bytes, 2 * 2 * 2 * 64 * 4 * 4, "40 positions round up to 64");
        let got = slotted.copy_span(0, 27).unwrap();
        let want = source.copy_span(0, 27).unwrap();
        for (layer, ((gk, gv), (wk, wv))) in got.iter().zip(&want).enumerate() {
            for (g, w) in [(gk, wk), (gv, wv)] {
                let diff = (g - w).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "slotted, layer {layer}");
            }
        }
    }
}
