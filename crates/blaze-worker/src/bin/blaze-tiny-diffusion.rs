//! `blaze-tiny-diffusion DIR [sd|sdxl|turbo] [SEED]`: writes a tiny random-weight pipeline in
//! the diffusers layout into DIR (a few hundred kilobytes per component), which
//! `blaze-worker --kind diffusion --model file://DIR` serves without a download. The same
//! seed writes the same weights.

use std::path::PathBuf;

use blaze_worker::model::diffusion::tiny::{self, Variant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: blaze-tiny-diffusion DIR [sd|sdxl|turbo] [SEED]";
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let variant: Variant = match args.get(1).map(|v| v.parse()).unwrap_or(Ok(Variant::Sd)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("variant {e}\n{usage}");
            std::process::exit(2);
        }
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()).unwrap_or(Ok(0)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("seed: {e}\n{usage}");
            std::process::exit(2);
        }
    };
    if let Err(e) = tiny::write(&dir, variant, seed) {
        eprintln!("writing {}: {e}", dir.display());
        std::process::exit(1);
    }
    println!("{}", dir.display());
}
