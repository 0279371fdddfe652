use candle_core::{Device, Tensor};

use super::*;

const LAYERS: usize = 2;
/// Bytes per token of the caches below: 2 layers x (keys + values) x 2 heads x 4 x f32.
const PER_TOKEN: usize = LAYERS * 2 * 2 * 4 * 4;

/// A cache as a prefill of `prompt` leaves it: every position's keys are the token id plus
/// the layer, so a reused position shows where it came from.
fn prefilled(prompt: &[u32]) -> KvCache {
    let device = Device::Cpu;
    let mut cache = KvCache::default();
    for layer in 0..LAYERS {
        let ids: Vec<f32> =
            prompt.iter().flat_map(|&t| std::iter::repeat_n(t as f32 + layer as f32, 4)).collect();
        let one_head = Tensor::from_vec(ids, (1, 1, prompt.len(), 4), &device).unwrap();
        let k = Tensor::cat(&[&one_head, &one_head], 1).unwrap();
        let v = (&k * 2.0).unwrap();
        cache.append(layer, &k, &v).unwrap();
    }
    cache.len = prompt.len();
    cache
}

/// The token ids the first `n` positions of `cache` were computed for (layer 0's keys).
fn positions(cache: &KvCache, n: usize) -> Vec<u32> {
    let (k, v) = cache.layers[0].as_ref().unwrap();
    let k = k.narrow(2, 0, n).unwrap().narrow(1, 1, 1).unwrap().narrow(3, 0, 1).unwrap();
    let v = v.narrow(2, 0, n).unwrap().narrow(1, 0, 1).unwrap().narrow(3, 3, 1).unwrap();
    let keys: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
    let values: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(values, keys.iter().map(|k| k * 2.0).collect::<Vec<_>>(), "values follow keys");
    keys.into_iter().map(|k| k as u32).collect()
}

/// What a lookup into a cache of its own found.
struct Reuse {
    cache: KvCache,
    tokens: usize,
}

fn lookup(prefixes: &PrefixCache, prompt: &[u32]) -> Result<Reuse> {
    let mut cache = KvCache::default();
    let tokens = prefixes.lookup_into(prompt, &mut cache)?;
    Ok(Reuse { cache, tokens })
}

fn prompt(start: u32, len: usize) -> Vec<u32> {
    (start..start + len as u32).collect()
}

#[test]
fn a_shared_prefix_is_reused_block_by_block() {
    let mut cache = PrefixCache::new(1 << 20, PER_TOKEN);
    let first = prompt(100, 40);
    assert_eq!(lookup(&cache, &first).unwrap().tokens, 0, "nothing yet");
    cache.insert(&first, &prefilled(&first)).unwrap();
    assert_eq!(cache.len(), 2, "two whole blocks of 40 tokens");
    assert_eq!(cache.bytes(), 2 * (BLOCK_TOKENS * PER_TOKEN) as u64);

    // The same prompt: both blocks; a prompt sharing 20 tokens: the first block only.
    let again = lookup(&cache, &first).unwrap();
    assert_eq!(again.tokens, 32);
    assert_eq!(again.cache.len(), 32);
    assert_eq!(positions(&again.cache, 32), first[..32]);
    let mut other = first[..20].to_vec();
    other.extend(prompt(900, 30));
    let partial = lookup(&cache, &other).unwrap();
    assert_eq!(partial.tokens, 16);
    assert_eq!(positions(&partial.cache, 16), first[..16]);
    // The same tokens after a different first block are another prefix.
    let mut shifted = prompt(7, 16);
    shifted.extend(&first[16..40]);
    assert_eq!(lookup(&cache, &shifted).unwrap().tokens, 0);
}

#[test]
fn the_last_prompt_token_always_runs() {
    let mut cache = PrefixCache::new(1 << 20, PER_TOKEN);
    let exact = prompt(1, 32);
    cache.insert(&exact, &prefilled(&exact)).unwrap();
    let reuse = lookup(&cache, &exact).unwrap();
    assert_eq!(reuse.tokens, 31, "a prompt found whole leaves its last token to compute");
    assert_eq!(positions(&reuse.cache, 31), exact[..31]);
    assert!(reuse.cache.bytes() >= 32 * PER_TOKEN, "room for the rest of the prompt");
}

#[test]
fn eviction_takes_the_least_recent_prompt_end_first() {
    // Room for three blocks.
    let mut cache = PrefixCache::new(3 * (BLOCK_TOKENS * PER_TOKEN) as u64 + 5, PER_TOKEN);
    assert_eq!(cache.capacity_bytes(), 3 * (BLOCK_TOKENS * PER_TOKEN) as u64);
    let (a, b) = (prompt(0, 33), prompt(1000, 33));
    cache.insert(&a, &prefilled(&a)).unwrap();
    cache.insert(&b, &prefilled(&b)).unwrap();
    assert_eq!((cache.len(), cache.evictions()), (3, 1));
    assert_eq!(lookup(&cache, &a).unwrap().tokens, 16, "a's end went, its beginning stayed");
    assert_eq!(lookup(&cache, &b).unwrap().tokens, 32);
    // Using a again makes b the older one.
    cache.insert(&a, &prefilled(&a)).unwrap();
    assert_eq!(lookup(&cache, &a).unwrap().tokens, 32);
    assert_eq!(lookup(&cache, &b).unwrap().tokens, 16);
    assert!(cache.bytes() <= cache.capacity_bytes());
}

#[test]
fn a_capacity_below_one_block_keeps_nothing() {
    let mut cache = PrefixCache::new((BLOCK_TOKENS * PER_TOKEN) as u64 - 1, PER_TOKEN);
    assert_eq!(cache.capacity_bytes(), 0);
    let p = prompt(0, 64);
    cache.insert(&p, &prefilled(&p)).unwrap();
    assert!(cache.is_empty());
    assert_eq!(lookup(&cache, &p).unwrap().tokens, 0);
}
