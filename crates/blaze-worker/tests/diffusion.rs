//! The diffusion pipelines on tiny random-weight pipelines written in the diffusers layout:
//! sizes, seeds, memory options and batching as a caller of the model sees them, and images
//! against diffusers' (tests/data/diffusion, made as scripts/reference-diffusion.py says).

use std::path::Path;

use blaze_worker::model::diffusion::tiny::{self, Variant};
use blaze_worker::model::diffusion::{
    DiffusionModel, ImageSpec, MemoryOptions, PipelineKind, Pixels,
};
use candle_core::{DType, Device};

fn pipeline(dir: &Path, variant: Variant, options: MemoryOptions) -> DiffusionModel {
    if !dir.join("model_index.json").is_file() {
        tiny::write(dir, variant, 7).unwrap();
    }
    DiffusionModel::load(dir, &Device::Cpu, DType::F32, options).unwrap()
}

fn spec(prompt: &str, width: usize, height: usize, seed: u64, guidance: f64) -> ImageSpec {
    ImageSpec {
        prompt: prompt.into(),
        negative_prompt: String::new(),
        width,
        height,
        steps: 3,
        guidance_scale: guidance,
        seed,
    }
}

/// The largest difference of one channel of one pixel.
fn max_diff(a: &Pixels, b: &Pixels) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.rgb.iter().zip(&b.rgb).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

#[test]
fn each_pipeline_type_makes_an_image_of_the_requested_size() {
    let root = tempfile::tempdir().unwrap();
    for (variant, kind, guidance) in [
        (Variant::Sd, PipelineKind::StableDiffusion, 7.5),
        (Variant::Sdxl, PipelineKind::StableDiffusionXl, 5.0),
        (Variant::Turbo, PipelineKind::StableDiffusionXl, 0.0),
    ] {
        let dir = root.path().join(format!("{variant:?}"));
        let model = pipeline(&dir, variant, MemoryOptions::default());
        assert_eq!(model.kind(), kind);
        assert_eq!(model.default_guidance(), guidance, "{variant:?}");
        let images = model.generate(&[spec("a red fox in the snow", 96, 64, 1, guidance)]).unwrap();
        assert_eq!(images.len(), 1);
        let image = &images[0];
        assert_eq!((image.width, image.height, image.rgb.len()), (96, 64, 96 * 64 * 3));
        let distinct: std::collections::HashSet<_> = image.rgb.iter().collect();
        assert!(distinct.len() > 16, "{variant:?}: a flat image ({} values)", distinct.len());
        let png = blaze_worker::model::diffusion::png(image).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}

#[test]
fn the_same_seed_gives_the_same_image_and_another_seed_another() {
    let root = tempfile::tempdir().unwrap();
    for variant in [Variant::Sd, Variant::Turbo] {
        let dir = root.path().join(format!("{variant:?}"));
        let model = pipeline(&dir, variant, MemoryOptions::default());
        let g = model.default_guidance();
        let a = model.generate(&[spec("a lighthouse", 64, 64, 42, g)]).unwrap();
        let b = model.generate(&[spec("a lighthouse", 64, 64, 42, g)]).unwrap();
        let c = model.generate(&[spec("a lighthouse", 64, 64, 43, g)]).unwrap();
        assert_eq!(a, b, "{variant:?}: same seed, different image");
        assert!(max_diff(&a[0], &c[0]) > 8, "{variant:?}: another seed, same image");
    }
}

#[test]
fn a_batch_of_two_equals_each_alone() {
    let root = tempfile::tempdir().unwrap();
    for variant in [Variant::Sd, Variant::Turbo] {
        let dir = root.path().join(format!("{variant:?}"));
        let model = pipeline(&dir, variant, MemoryOptions::default());
        let g = model.default_guidance();
        let first = spec("a lighthouse at night", 64, 64, 5, g);
        let mut second =
            spec("a bowl of fruit", 64, 64, 6, g.max(1.0) + 2.0 * f64::from(u8::from(g > 1.0)));
        if g <= 1.0 {
            second.guidance_scale = g;
        }
        let batch = model.generate(&[first.clone(), second.clone()]).unwrap();
        let alone = [model.generate(&[first]).unwrap(), model.generate(&[second]).unwrap()];
        for i in 0..2 {
            let d = max_diff(&batch[i], &alone[i][0]);
            assert!(d <= 2, "{variant:?}: image {i} differs by {d}/255 in a batch");
        }
    }
}

#[test]
fn slicing_gives_the_same_image_within_two_levels() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sd");
    let plain = pipeline(&dir, Variant::Sd, MemoryOptions::default());
    let sliced = pipeline(
        &dir,
        Variant::Sd,
        MemoryOptions { attention_slicing: true, vae_slicing: true, ..Default::default() },
    );
    let specs = [spec("a cat", 64, 64, 9, 7.5), spec("a dog", 64, 64, 10, 7.5)];
    let a = plain.generate(&specs).unwrap();
    let b = sliced.generate(&specs).unwrap();
    for i in 0..2 {
        let d = max_diff(&a[i], &b[i]);
        assert!(d <= 2, "image {i} differs by {d}/255 with slicing");
    }
}

/// The pipelines and starting noise of the reference check: scripts/reference-diffusion.py
/// runs diffusers on them (see there).
const REFERENCE: [(&str, Variant); 2] = [("sd", Variant::Sd), ("sdxl", Variant::Sdxl)];

fn reference_spec(model: &DiffusionModel) -> ImageSpec {
    spec("a red fox in the snow", 96, 64, 11, model.default_guidance())
}

/// Writes the inputs of scripts/reference-diffusion.py into `$REFERENCE_DIR`.
#[test]
#[ignore = "writes inputs for scripts/reference-diffusion.py"]
fn write_reference_inputs() {
    let root = std::path::PathBuf::from(std::env::var("REFERENCE_DIR").unwrap());
    for (name, variant) in REFERENCE {
        let model = pipeline(&root.join(name), variant, MemoryOptions::default());
        let noise = model.initial_noise(&reference_spec(&model)).unwrap();
        noise.save_safetensors("noise", root.join(format!("{name}-noise.safetensors"))).unwrap();
    }
}

fn read_png(path: &Path) -> Pixels {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    rgb.truncate(info.buffer_size());
    Pixels { width: info.width as usize, height: info.height as usize, rgb }
}

/// SD (DDIM) and SDXL (Euler, pooled text and size conditioning) draw what diffusers draws
/// from the same weights, prompt and starting noise: every channel of every pixel within 2
/// levels of 255 (rounding in kernels that add in another order), on average within 0.01.
#[test]
fn images_match_the_reference_implementation() {
    let root = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/diffusion");
    for (name, variant) in REFERENCE {
        let model = pipeline(&root.path().join(name), variant, MemoryOptions::default());
        let image = &model.generate(&[reference_spec(&model)]).unwrap()[0];
        let reference = read_png(&data.join(format!("{name}.png")));
        let d = max_diff(image, &reference);
        let total: u64 =
            image.rgb.iter().zip(&reference.rgb).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
        let mean = total as f64 / image.rgb.len() as f64;
        assert!(d <= 2 && mean < 0.01, "{name}: max difference {d}, mean {mean:.4}");
    }
}

mod engine {
    use std::time::{Duration, Instant};

    use blaze_worker::engine::SubmitError;
    use blaze_worker::engine::diffusion::{
        DiffusionConfig, DiffusionEngine, DiffusionMetrics, ImageEvent, ImageRequest,
    };
    use blaze_worker::metrics::Metrics;

    use super::*;

    fn start(
        dir: &Path,
        config: DiffusionConfig,
    ) -> (DiffusionEngine, prometheus_client::registry::Registry) {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let own = DiffusionMetrics::register(&mut registry);
        let model = pipeline(dir, Variant::Sd, MemoryOptions::default());
        (DiffusionEngine::start("tiny".into(), model, config, metrics, own), registry)
    }

    fn request(seed: u64, steps: usize) -> ImageRequest {
        let mut image = spec("a fox", 64, 64, seed, 7.5);
        image.steps = steps;
        ImageRequest { images: vec![image], deadline: None }
    }

    fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    /// A request whose client went away leaves the batch at the next step; the others in it
    /// finish with their images.
    #[tokio::test]
    async fn a_cancelled_request_leaves_its_batch_and_the_rest_finish() {
        let root = tempfile::tempdir().unwrap();
        let config = DiffusionConfig { max_wait: Duration::from_millis(300), ..Default::default() };
        let (engine, registry) = start(root.path(), config);
        let mut kept = engine.submit(request(1, 40)).unwrap();
        let mut dropped = engine.submit(request(2, 40)).unwrap();
        assert!(matches!(dropped.recv().await, Some(ImageEvent::Progress { step: 1, steps: 40 })));
        drop(dropped);
        let mut last = None;
        while let Some(event) = kept.recv().await {
            last = Some(event);
        }
        let Some(ImageEvent::Done(images)) = last else { panic!("no images: {last:?}") };
        assert_eq!((images.len(), images[0].seed), (1, 1));
        let text = metrics_text(&registry);
        assert!(
            text.contains(r#"vllm:request_success_total{finished_reason="cancelled"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"vllm:request_success_total{finished_reason="stop"} 1"#), "{text}");
        assert!(text.contains("blaze_diffusion_images_total 1"), "{text}");
        assert_eq!(engine.in_flight(), 0);
    }

    /// A request past its deadline ends with an error that says so, between two steps.
    #[tokio::test]
    async fn a_request_past_its_deadline_ends_with_an_error() {
        let root = tempfile::tempdir().unwrap();
        let (engine, _registry) = start(root.path(), DiffusionConfig::default());
        let mut late = request(3, 150);
        late.deadline = Some(Instant::now() + Duration::from_millis(200));
        let mut events = engine.submit(late).unwrap();
        let mut last = None;
        while let Some(event) = events.recv().await {
            last = Some(event);
        }
        let Some(ImageEvent::Error(e)) = last else {
            panic!("not ended by its deadline: {last:?}")
        };
        assert!(e.to_string().contains("deadline"), "{e}");
    }

    /// More requests than the queue holds are refused at once, naming the limit.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let root = tempfile::tempdir().unwrap();
        let config = DiffusionConfig { max_queue: 1, max_batch_size: 1, ..Default::default() };
        let (engine, _registry) = start(root.path(), config);
        let mut refused = None;
        let mut held = Vec::new();
        for seed in 0..6 {
            match engine.submit(request(seed, 150)) {
                Ok(events) => held.push(events),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert_eq!(refused, Some(SubmitError::QueueFull(1)));
    }
}

/// Half-precision weights (what a GPU computes in; candle's CPU kernels have f16 but not
/// bf16 matmuls) run every component, SDXL's conditioning included, and draw nearly the
/// image f32 draws (0.3 levels apart on average when written).
#[test]
fn f16_weights_draw_nearly_the_f32_image() {
    let root = tempfile::tempdir().unwrap();
    for (name, variant) in REFERENCE {
        let dir = root.path().join(name);
        let f32_model = pipeline(&dir, variant, MemoryOptions::default());
        let half =
            DiffusionModel::load(&dir, &Device::Cpu, DType::F16, MemoryOptions::default()).unwrap();
        let spec = reference_spec(&f32_model);
        let a = &f32_model.generate(std::slice::from_ref(&spec)).unwrap()[0];
        let b = &half.generate(&[spec]).unwrap()[0];
        let total: u64 = a.rgb.iter().zip(&b.rgb).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        let mean = total as f64 / a.rgb.len() as f64;
        assert!(mean < 2.0, "{name}: f16 differs from f32 by {mean:.2} levels on average");
    }
}
