"""The reference images of the diffusion pipelines' correctness test.

Runs diffusers (in the reference environment: scripts/reference-venv.sh) on the tiny
random-weight pipelines and initial noise that
`REFERENCE_DIR=DIR cargo test -p blaze-worker --test integration diffusion::write_reference_inputs -- --ignored`
writes into DIR, and saves each image as OUT/NAME.png. DDIM (SD) and Euler (SDXL) add no noise
while they step, so given the same starting noise the worker must draw the same image.

    python scripts/reference-diffusion.py DIR crates/blaze-worker/tests/data/diffusion
"""

import sys

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import load_file

# Must match write_reference_inputs in crates/blaze-worker/tests/diffusion.rs.
PROMPT = "a red fox in the snow"
WIDTH, HEIGHT, STEPS = 96, 64, 3


def main(inputs: str, out: str) -> None:
    torch.manual_seed(0)
    for name, cls, guidance in [
        ("sd", StableDiffusionPipeline, 7.5),
        ("sdxl", StableDiffusionXLPipeline, 5.0),
    ]:
        extra = {}
        if cls is StableDiffusionPipeline:
            extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = cls.from_pretrained(f"{inputs}/{name}", torch_dtype=torch.float32, **extra)
        noise = load_file(f"{inputs}/{name}-noise.safetensors")["noise"]
        image = pipe(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                     guidance_scale=guidance, latents=noise, output_type="np").images[0]
        pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"{out}/{name}.png")
        print(f"{out}/{name}.png")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
