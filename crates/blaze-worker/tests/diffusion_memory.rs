//! Peak heap of a diffusion request with each memory option on and off, measured by a
//! counting global allocator ([`blaze_worker::peak_memory`]) on a tiny random-weight SD
//! pipeline. Its own test binary, one test, configurations one after another: nothing else
//! allocates while a peak is measured.
//!
//! What is measured is the peak during a request (`generate`, text to pixels), above what the
//! process held before:
//! - Attention slicing, VAE slicing and tiling change only what a request allocates while
//!   it runs: the model is loaded first and the peak counted from there, so the weights
//!   (the same in both) are left out of both.
//! - CPU offload changes what is held between requests: without it every component's
//!   weights stay allocated; with it none do, and a request builds each component from its
//!   weight file while it runs. So the peak is counted from before the model loads, through
//!   the load and the request: the resident weights (or the rebuilds) are part of what the
//!   request costs. The saving is the weights of the components not running at the peak,
//!   which the test checks against the UNet's and text encoder's file sizes (the autoencoder
//!   runs at the peak). On the CPU a rebuild holds the file's bytes and the tensors made
//!   from them at once, twice the component, for a moment (candle's safetensors loading), so
//!   offload pays once a component's activations outweigh its weights, as they do here.
//!
//! Each option is compared where the part it slices is what peaks: attention at 256x256
//! with guidance (a UNet batch of two) with the autoencoder tiled in both runs (else
//! decoding, not attention, peaks); VAE slicing with two images; tiling at 256x256, twice
//! the tiny autoencoder's trained size of 128 (so four tiles' worth, as 1024x1024 is for an
//! SD 1.5 autoencoder), with attention sliced in both runs. Sizes are kept small so that the
//! test takes seconds in the dev profile. Each option is measured on before off, so memory
//! that a first run leaves allocated for good (thread pools, kernel scratch space) could
//! only count against the option; a warm-up request runs first too.

#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::path::Path;

use blaze_worker::model::diffusion::tiny::{self, Variant};
use blaze_worker::model::diffusion::{DiffusionModel, ImageSpec, MemoryOptions};
use blaze_worker::peak_memory::Counting;
use candle_core::{DType, Device};

#[global_allocator]
static HEAP: Counting = Counting::new();

const MIB: f64 = 1024.0 * 1024.0;

fn spec(size: usize, seed: u64, guidance: f64) -> ImageSpec {
    ImageSpec {
        prompt: "a lighthouse on a cliff".into(),
        negative_prompt: String::new(),
        width: size,
        height: size,
        // Every step allocates the same; one is enough to measure.
        steps: 1,
        guidance_scale: guidance,
        seed,
    }
}

fn load(dir: &Path, options: MemoryOptions) -> DiffusionModel {
    DiffusionModel::load(dir, &Device::Cpu, DType::F32, options).unwrap()
}

/// Peak bytes allocated during `generate(specs)`, above what the loaded model holds.
fn request_peak(dir: &Path, options: MemoryOptions, specs: &[ImageSpec]) -> usize {
    let model = load(dir, options);
    let (images, peak) = HEAP.peak_during(|| model.generate(specs).unwrap());
    assert_eq!(images.len(), specs.len());
    peak
}

/// `on`'s peak is at most `ratio` of `off`'s.
fn assert_lower(what: &str, on: usize, off: usize, ratio: f64) {
    let measured = on as f64 / off as f64;
    eprintln!(
        "{what}: {:.2} MiB with, {:.2} MiB without ({measured:.2})",
        on as f64 / MIB,
        off as f64 / MIB
    );
    assert!(
        measured <= ratio,
        "{what}: peak {on} bytes with, {off} without: {measured:.2} of it, not at most {ratio}"
    );
}

fn file_size(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

#[test]
fn peak_heap_is_lower_with_each_memory_option() {
    // The counter counts: a 16 MiB buffer shows as 16 MiB (and a little).
    let (_, peak) = HEAP.peak_during(|| std::hint::black_box(vec![1u8; 16 << 20]).len());
    assert!((16 << 20..17 << 20).contains(&peak), "a 16 MiB buffer counted as {peak} bytes");

    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    tiny::write(dir, Variant::Sd, 7).unwrap();
    let off = MemoryOptions::default();
    request_peak(dir, off, &[spec(64, 1, 7.5)]);

    // Attention: the scores of 1 head of 4 (2 heads, a UNet batch of 2) instead of all 4;
    // measured 0.53 (10.5 against 34.5 MiB in the UNet alone, 0.31).
    let guided = [spec(256, 1, 7.5)];
    let tiled = MemoryOptions { vae_tiling: true, ..off };
    let sliced_tiled = MemoryOptions { attention_slicing: true, ..tiled };
    let both = request_peak(dir, sliced_tiled, &guided);
    let tiled_only = request_peak(dir, tiled, &guided);
    assert_lower("attention slicing, 256x256, guided", both, tiled_only, 0.6);

    // VAE tiling: 128x128 tiles instead of the whole 256x256 image; measured 0.28.
    let sliced = MemoryOptions { attention_slicing: true, ..off };
    let untiled = request_peak(dir, sliced, &guided);
    assert_lower("VAE tiling, 256x256", both, untiled, 0.4);

    // VAE slicing: one image's decoder activations instead of two; measured 0.52.
    let two = [spec(128, 2, 0.0), spec(128, 3, 0.0)];
    let one_at_a_time = request_peak(dir, MemoryOptions { vae_slicing: true, ..off }, &two);
    let together = request_peak(dir, off, &two);
    assert_lower("VAE slicing, 2 images of 128x128", one_at_a_time, together, 0.6);

    offload_holds_only_the_running_component(dir);
}

/// CPU offload: the peak from before the load through one request is lower by the weights
/// of the components that are not running when the autoencoder decodes (UNet and text
/// encoder), and between requests the model holds (almost) nothing.
fn offload_holds_only_the_running_component(dir: &Path) {
    let request = [spec(128, 4, 7.5)];
    let whole = |options: MemoryOptions| {
        let start = HEAP.reset_peak();
        let model = load(dir, options);
        let held = HEAP.current() - start;
        model.generate(&request).unwrap();
        (HEAP.peak() - start, held)
    };
    let (offloaded, held_offloaded) =
        whole(MemoryOptions { cpu_offload: true, ..Default::default() });
    let (resident, held_resident) = whole(MemoryOptions::default());
    let idle = ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]
        .iter()
        .map(|f| file_size(&dir.join(f)))
        .sum::<usize>();
    let saved = resident as f64 - offloaded as f64;
    eprintln!(
        "CPU offload, 128x128 guided, load and request: {:.2} MiB with, {:.2} MiB without: \
         {:.2} MiB less, the idle components' weights are {:.2} MiB; held between requests \
         {:.2} MiB with, {:.2} MiB without",
        offloaded as f64 / MIB,
        resident as f64 / MIB,
        saved / MIB,
        idle as f64 / MIB,
        held_offloaded as f64 / MIB,
        held_resident as f64 / MIB,
    );
    assert!(
        saved >= 0.8 * idle as f64,
        "offload saved {saved} bytes at the peak; the UNet and text encoder weigh {idle}"
    );
    assert!(
        held_offloaded * 10 <= held_resident,
        "held between requests: {held_offloaded} bytes offloaded, {held_resident} resident"
    );
}
