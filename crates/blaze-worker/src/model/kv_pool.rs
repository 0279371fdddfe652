//! Keys and values of every running sequence in one buffer per layer, a slot per sequence,
//! so that a decode step's attention is one batched call for the whole batch instead of a
//! few calls per sequence. On a GPU each call is a kernel launch, and per sequence a step
//! launched about seven per layer: at 64 sequences and 16 layers some 7,000 launches, which
//! cost more than reading the weights.
//!
//! A layer's buffer is `[slots, kv_heads, capacity, head_dim]`. A sequence holds the lowest
//! free slot while it runs, so the busy slots stay packed at the front; a decode step
//! attends over the first `live` slots (up to the highest busy one) and the first `len`
//! positions (up to the longest sequence), masking each slot's positions past its own
//! length. Slots and positions grow by doubling (positions up to the model's context) and
//! are kept: a worker holds the buffer its busiest moment needed, as GPU servers keep
//! their KV memory.
//!
//! The CPU keeps per-sequence caches ([`super::KvCache`]'s own buffers): there the
//! per-sequence attention spreads over threads and gives a sequence the same numbers
//! whatever the batch, while the padded batched form would read and compute positions
//! that hold nothing.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor};

use super::kv_cache::{FIRST_CAPACITY, KvCache};
use crate::{Error, Result};

/// Most positions a slot holds. Every slot has room for the longest sequence in the pool,
/// so one long sequence would make the whole buffer that long; a sequence that may pass
/// this (prompt and `max_tokens`) keeps a cache of its own and attends on its own in the
/// same step. 16 slots of 4,096 positions of an 8B model in bf16 (128 KiB a position) are
/// 8 GiB.
pub const SLOT_POSITIONS: usize = 4096;

/// The buffers of every slot.
pub struct KvPool {
    inner: Mutex<Inner>,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
    /// Positions a slot never needs more of (the model's context).
    max_positions: usize,
    /// Slots the buffers are never grown past (the scheduler's batch size; more sequences
    /// than that still get slots, growing one at a time).
    max_slots: usize,
}

#[derive(Default)]
struct Inner {
    /// Per layer, `[slots, kv_heads, capacity, head_dim]` keys and values; empty until the
    /// first slot is written.
    layers: Vec<(Tensor, Tensor)>,
    /// Which slots a sequence holds.
    taken: Vec<bool>,
}

/// A sequence's place in a [`KvPool`]; dropping it frees the slot.
pub(crate) struct Slot {
    pub(crate) pool: Arc<KvPool>,
    pub(crate) index: usize,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        if let Some(taken) = inner.taken.get_mut(self.index) {
            *taken = false;
        }
    }
}

/// What one decode step over slotted sequences needs, worked out once for every layer.
pub(crate) struct Plan {
    /// Slots `0..live` take part (the highest busy one and those before it).
    live: usize,
    /// Positions `0..len` take part (the longest sequence's, its new one included).
    len: usize,
    /// `[live * kv_heads, 1, head_dim]`: the position each live slot's new key and value
    /// go to in a layer's buffer seen as `[live * kv_heads, capacity, head_dim]` (repeated
    /// along the row, as a scatter takes it), `u32::MAX` (nothing written) for a free slot.
    /// Scattered along positions, a GPU thread writes one element: scattered along rows,
    /// each would loop over the whole batch.
    write: Tensor,
    /// For each of the `live` slots, the batch row of the sequence in it (0 for a free
    /// slot, whose answer is dropped): it puts the queries, and the new keys and values, in
    /// slot order.
    queries: Tensor,
    /// `[live, 1, 1, len]`: 0 where a slot has a position, -inf past it.
    mask: Tensor,
    /// Positions per slot in the buffers when the plan was made (checked by `attend`).
    capacity: usize,
    /// The slot of each batch row.
    outputs: Tensor,
}

impl Inner {
    /// The slots and positions of every buffer, smallest first and largest second (they
    /// differ only after a growth that failed part way); `None` before every layer exists.
    fn sizes(&self, layers: usize) -> Option<((usize, usize), (usize, usize))> {
        if self.layers.len() != layers {
            return None;
        }
        let dims = self.layers.iter().flat_map(|(k, v)| [k.dims(), v.dims()]);
        let (small, large) = ((usize::MAX, usize::MAX), (0, 0));
        Some(dims.fold((small, large), |(s, l), d| {
            ((s.0.min(d[0]), s.1.min(d[2])), (l.0.max(d[0]), l.1.max(d[2])))
        }))
    }
}

impl KvPool {
    /// An empty pool for a model with `layers` layers of `kv_heads` heads of `head_dim`
    /// numbers in `dtype` on `device`, a context of `max_positions`, and batches of
    /// `max_slots` sequences.
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
        max_positions: usize,
        max_slots: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            layers,
            kv_heads,
            head_dim,
            dtype,
            device: device.clone(),
            max_positions: max_positions.clamp(1, SLOT_POSITIONS),
            max_slots: max_slots.max(1),
        })
    }

    /// The device the buffers are on.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Most positions a slot holds: a sequence that may grow longer keeps a cache of its
    /// own (see [`SLOT_POSITIONS`]).
    pub fn slot_positions(&self) -> usize {
        self.max_positions
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty cache in the lowest free slot, the pool grown so that every slot holds
    /// `positions` (a prompt's, so that neither copying its prefix from the prefix cache nor
    /// its prefill grows the pool).
    pub fn cache_for(self: &Arc<Self>, positions: usize) -> Result<KvCache> {
        let cache = self.cache();
        let Some(slot) = &cache.slot else { unreachable!("a pool's cache has a slot") };
        let mut inner = self.lock();
        self.reserve(&mut inner, slot.index + 1, positions)?;
        drop(inner);
        Ok(cache)
    }

    /// An empty cache in the lowest free slot.
    pub fn cache(self: &Arc<Self>) -> KvCache {
        let mut inner = self.lock();
        let index = match inner.taken.iter().position(|t| !t) {
            Some(i) => i,
            None => {
                inner.taken.push(false);
                inner.taken.len() - 1
            }
        };
        inner.taken[index] = true;
        drop(inner);
        KvCache { layers: Vec::new(), len: 0, slot: Some(Slot { pool: self.clone(), index }) }
    }

    /// Bytes one slot occupies (every layer's keys and values at the current capacity).
    pub(crate) fn slot_bytes(&self) -> usize {
        let capacity = self.lock().sizes(self.layers).map_or(0, |(small, _)| small.1);
        2 * self.layers * self.kv_heads * capacity * self.head_dim * self.dtype.size_in_bytes()
    }

    /// Grows every layer's buffers to at least `slots` slots of `positions` positions:
    /// slots by doubling up to `max_slots` (one at a time past it), positions by doubling up
    /// to the context. Layer by layer, so that at most one layer's old and new buffers are
    /// held at once; a layer already as large (from a growth that failed part way) is kept.
    fn reserve(&self, inner: &mut Inner, slots: usize, positions: usize) -> Result<()> {
        if positions > self.max_positions {
            return Err(Error::Unsupported(format!(
                "{positions} positions in a context of {}",
                self.max_positions
            )));
        }
        let sizes = inner.sizes(self.layers);
        if sizes.is_some_and(|(small, _)| slots <= small.0 && positions <= small.1) {
            return Ok(());
        }
        let held = sizes.map_or((0, 0), |(_, large)| large);
        let doubled = slots.next_power_of_two().min(self.max_slots);
        let new_slots = doubled.max(slots).max(held.0);
        let new_capacity =
            (positions.next_power_of_two().max(FIRST_CAPACITY)).min(self.max_positions).max(held.1);
        let (h, d) = (self.kv_heads, self.head_dim);
        let zeros = |s: usize, c: usize| Tensor::zeros((s, h, c, d), self.dtype, &self.device);
        let grow = |old: &Tensor| -> Result<Tensor> {
            let (old_slots, _, old_capacity, _) = old.dims4()?;
            let wider = if new_capacity > old_capacity {
                Tensor::cat(&[old, &zeros(old_slots, new_capacity - old_capacity)?], 2)?
            } else {
                old.clone()
            };
            Ok(if new_slots > old_slots {
                Tensor::cat(&[&wider, &zeros(new_slots - old_slots, new_capacity)?], 0)?
            } else {
                wider
            })
        };
        if sizes.is_none() {
            inner.layers.clear();
            for _ in 0..self.layers {
                let layer = (zeros(new_slots, new_capacity)?, zeros(new_slots, new_capacity)?);
                inner.layers.push(layer);
            }
        } else {
            for layer in &mut inner.layers {
                let keys = grow(&layer.0)?;
                layer.0 = keys;
                let values = grow(&layer.1)?;
                layer.1 = values;
            }
        }
        Ok(())
    }

    /// Writes `k` and `v` (`[1, kv_heads, n, head_dim]`) at positions `pos..pos + n` of
    /// `slot` in `layer` and returns views of its positions `0..pos + n`. The write happens
    /// under the pool's lock: a growth meanwhile (another sequence's append on another
    /// thread) would copy the buffers before it and lose it.
    pub(crate) fn append(
        &self,
        slot: usize,
        layer: usize,
        pos: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let need = pos + k.dim(2)?;
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let mut inner = self.lock();
        self.reserve(&mut inner, slot + 1, need)?;
        let (keys, values) = &inner.layers[layer];
        let (keys, values) = (keys.narrow(0, slot, 1)?, values.narrow(0, slot, 1)?);
        keys.slice_set(&k, 2, pos)?;
        values.slice_set(&v, 2, pos)?;
        drop(inner);
        Ok((keys.narrow(2, 0, need)?, values.narrow(2, 0, need)?))
    }

    /// Copies of positions `start..start + n` of `slot`'s keys and values, per layer.
    pub(crate) fn copy_span(
        &self,
        slot: usize,
        start: usize,
        n: usize,
    ) -> Result<Vec<(Tensor, Tensor)>> {
        let inner = self.lock();
        if inner.layers.is_empty() {
            return Err(Error::Unsupported("a slot without keys".into()));
        }
        inner
            .layers
            .iter()
            .map(|(k, v)| {
                let span = |t: &Tensor| -> Result<Tensor> {
                    Ok(t.narrow(0, slot, 1)?.narrow(2, start, n)?.contiguous()?)
                };
                Ok((span(k)?, span(v)?))
            })
            .collect()
    }

    /// The plan of a decode step whose batch rows are the sequences in `seqs` (slot, length
    /// before the step), each adding one position.
    pub(crate) fn plan(&self, seqs: &[(usize, usize)]) -> Result<Plan> {
        let live = seqs.iter().map(|&(slot, _)| slot + 1).max().unwrap_or(0);
        let len = seqs.iter().map(|&(_, at)| at + 1).max().unwrap_or(0);
        let mut inner = self.lock();
        self.reserve(&mut inner, live, len)?;
        let capacity = inner.sizes(self.layers).map_or(0, |(small, _)| small.1);
        let (h, d) = (self.kv_heads, self.head_dim);
        drop(inner);
        let mut write = vec![u32::MAX; live * h * d];
        let mut queries = vec![0u32; live];
        let mut lengths = vec![1usize; live];
        for (row, &(slot, at)) in seqs.iter().enumerate() {
            write[slot * h * d..(slot + 1) * h * d].fill(at as u32);
            queries[slot] = row as u32;
            lengths[slot] = at + 1;
        }
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&n| (0..len).map(move |j| if j < n { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let outputs: Vec<u32> = seqs.iter().map(|&(slot, _)| slot as u32).collect();
        let dev = &self.device;
        Ok(Plan {
            live,
            len,
            capacity,
            write: Tensor::from_vec(write, (live * h, 1, d), dev)?,
            queries: Tensor::from_vec(queries, live, dev)?,
            mask: Tensor::from_vec(mask, (live, 1, 1, len), dev)?.to_dtype(self.dtype)?,
            outputs: Tensor::from_vec(outputs, seqs.len(), dev)?,
        })
    }

    /// One layer's attention for a decode step planned by `plan`: writes the new keys and
    /// values `k` and `v` (`[batch, kv_heads * head_dim]`) into their slots, then attends
    /// with the queries `q` (`[batch, heads * head_dim]`) over every live slot at once.
    /// Returns `[batch, heads * head_dim]`.
    pub(crate) fn attend(
        &self,
        plan: &Plan,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let (keys, values) = self.lock().layers[layer].clone();
        let (_, h, capacity, d) = keys.dims4()?;
        debug_assert_eq!(capacity, plan.capacity, "the buffers grew after the step's plan");
        for (buffer, new) in [(&keys, k), (&values, v)] {
            // A view of the live slots' rows, sharing the buffer's storage (a buffer is made
            // contiguous, so the reshape copies nothing and the scatter writes the buffer).
            debug_assert!(buffer.is_contiguous());
            let rows = buffer.narrow(0, 0, plan.live)?.reshape((plan.live * h, capacity, d))?;
            let in_slots = new.index_select(&plan.queries, 0)?;
            rows.scatter_set(&plan.write, &in_slots.reshape((plan.live * h, 1, d))?, 1)?;
        }
        let heads = q.dim(1)? / d;
        let groups = heads / h;
        let q = q.index_select(&plan.queries, 0)?.reshape((plan.live, h, groups, d))?;
        let view = |t: &Tensor| -> Result<Tensor> {
            Ok(t.narrow(0, 0, plan.live)?.narrow(2, 0, plan.len)?)
        };
        let scores = (q.matmul(&view(&keys)?.t()?)? / (d as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&plan.mask)?)?;
        let out = probs.matmul(&view(&values)?)?.reshape((plan.live, heads * d))?;
        Ok(out.index_select(&plan.outputs, 0)?)
    }
}
