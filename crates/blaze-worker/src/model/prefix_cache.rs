//! Keys and values of recent prompts, kept in blocks of [`BLOCK_TOKENS`] tokens so that a
//! request whose prompt starts like an earlier one copies that prefix instead of computing
//! it again.
//!
//! A block is found by a chained hash: its tokens and the hash of the block before it, so
//! one hash names a whole prefix. An entry also keeps its tokens and its parent's hash and a
//! lookup compares them, so a hash collision is a miss, never another prompt's keys.
//! Sequences copy the blocks they reuse into their own buffers or their KV slot (attention
//! reads one contiguous cache per sequence), so no running sequence holds a block and any
//! block may be evicted: least recently used first and, within one prompt, its end before its beginning
//! (a block is useless once the block before it is gone).

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use candle_core::Tensor;

use super::KvCache;
use crate::Result;

/// Tokens per block.
pub const BLOCK_TOKENS: usize = 16;

/// The chained hash of the block before a prompt's first.
const ROOT: u64 = 0x626c_617a_6520_6b76;

struct Block {
    parent: u64,
    tokens: [u32; BLOCK_TOKENS],
    /// Per layer, keys and values `[1, kv_heads, BLOCK_TOKENS, head_dim]`.
    layers: Vec<(Tensor, Tensor)>,
    used: u64,
}

/// The blocks, bounded by bytes.
pub struct PrefixCache {
    blocks: HashMap<u64, Block>,
    /// (last use, hash): the first is evicted first.
    order: BTreeSet<(u64, u64)>,
    clock: u64,
    block_bytes: usize,
    max_blocks: usize,
    evictions: u64,
}

impl PrefixCache {
    /// A cache of at most `capacity` bytes of blocks, each `kv_bytes_per_token *
    /// BLOCK_TOKENS` bytes.
    pub fn new(capacity: u64, kv_bytes_per_token: usize) -> Self {
        let block_bytes = (kv_bytes_per_token * BLOCK_TOKENS).max(1);
        let max_blocks = usize::try_from(capacity).unwrap_or(usize::MAX) / block_bytes;
        Self {
            blocks: HashMap::new(),
            order: BTreeSet::new(),
            clock: 0,
            block_bytes,
            max_blocks,
            evictions: 0,
        }
    }

    /// Bytes the blocks it may hold take (whole blocks: the capacity rounded down).
    pub fn capacity_bytes(&self) -> u64 {
        (self.max_blocks * self.block_bytes) as u64
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        (self.blocks.len() * self.block_bytes) as u64
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Blocks evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The longest prefix of `prompt` found, copied into `empty` (a cache in a slot of a
    /// [`KvPool`](super::KvPool), or one with buffers of its own, given room for the rest
    /// of the prompt); its length: at most the prompt's less one, because the last prompt
    /// token must run to give the logits of the first generated one. After an error the
    /// cache may hold part of it: [`KvCache::clear`] it.
    pub fn lookup_into(&self, prompt: &[u32], empty: &mut KvCache) -> Result<usize> {
        let mut found: Vec<&[(Tensor, Tensor)]> = Vec::new();
        let mut parent = ROOT;
        for tokens in prompt.chunks_exact(BLOCK_TOKENS) {
            let hash = chain(parent, tokens);
            match self.blocks.get(&hash) {
                Some(b) if b.parent == parent && b.tokens == tokens => found.push(&b.layers),
                _ => break,
            }
            parent = hash;
        }
        let tokens = (found.len() * BLOCK_TOKENS).min(prompt.len().saturating_sub(1));
        if tokens == 0 {
            return Ok(0);
        }
        empty.fill_from_blocks(&found, tokens, prompt.len() - tokens)?;
        Ok(tokens)
    }

    /// Keeps the whole blocks of `prompt` that `cache` (the sequence's, after its prefill)
    /// holds and this cache lacks, and marks all of the prompt's blocks as just used; then
    /// evicts down to the capacity.
    pub fn insert(&mut self, prompt: &[u32], cache: &KvCache) -> Result<()> {
        if self.max_blocks == 0 {
            return Ok(());
        }
        let whole = prompt.len().min(cache.len()) / BLOCK_TOKENS;
        // Only the first `max_blocks` blocks can ever be kept together.
        let whole = whole.min(self.max_blocks);
        let mut hashes = Vec::with_capacity(whole);
        let mut parent = ROOT;
        for (i, tokens) in prompt.chunks_exact(BLOCK_TOKENS).take(whole).enumerate() {
            let hash = chain(parent, tokens);
            let stale =
                self.blocks.get(&hash).is_some_and(|b| b.parent != parent || b.tokens != tokens);
            if stale {
                // A colliding hash: the newer prompt takes the slot.
                self.remove(hash);
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = self.blocks.entry(hash) {
                let layers = cache.copy_span(i * BLOCK_TOKENS, BLOCK_TOKENS)?;
                let mut block_tokens = [0; BLOCK_TOKENS];
                block_tokens.copy_from_slice(tokens);
                slot.insert(Block { parent, tokens: block_tokens, layers, used: 0 });
            }
            hashes.push(hash);
            parent = hash;
        }
        // The end of the prompt gets the oldest mark, so it goes first.
        for hash in hashes.into_iter().rev() {
            self.touch(hash);
        }
        while self.blocks.len() > self.max_blocks {
            let Some(&(_, oldest)) = self.order.first() else { break };
            self.remove(oldest);
            self.evictions += 1;
        }
        Ok(())
    }

    fn touch(&mut self, hash: u64) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(block) = self.blocks.get_mut(&hash) {
            self.order.remove(&(block.used, hash));
            block.used = clock;
            self.order.insert((clock, hash));
        }
    }

    fn remove(&mut self, hash: u64) {
        if let Some(block) = self.blocks.remove(&hash) {
            self.order.remove(&(block.used, hash));
        }
    }
}

fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
