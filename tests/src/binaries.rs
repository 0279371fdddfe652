//! The binaries and the model the scenarios run.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The quickstart's model file, looked for in the model cache.
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the binaries and the model are.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The `blaze` binary.
    pub blaze: PathBuf,
    /// The folder with `blaze-operator`, `blaze-worker` and `blaze-router`.
    pub bin_dir: PathBuf,
    /// The model cache holding the quickstart's SmolLM2.
    pub models: PathBuf,
}

impl Setup {
    /// `blaze` and the binaries in `bin_dir` and the model cache `models`, checked: an error
    /// names what is missing and how to get it.
    pub fn new(bin_dir: PathBuf, models: PathBuf) -> Result<Self> {
        for bin in ["blaze", "blaze-operator", "blaze-worker", "blaze-router"] {
            if !bin_dir.join(bin).is_file() {
                bail!(
                    "{} is missing: build the binaries first (cargo build --workspace --bins; \
                     cargo test --workspace builds them)",
                    bin_dir.join(bin).display()
                );
            }
        }
        if !models.join(MODEL).is_file() {
            bail!("{} has no {MODEL}: run scripts/fetch-models.sh", models.display());
        }
        Ok(Self { blaze: bin_dir.join("blaze"), bin_dir, models })
    }

    /// The binaries of this build (`BLAZE_BIN_DIR`, or the target folder this program was
    /// built into, where they are built first: `cargo test` builds only the binaries of the
    /// packages it tests) and the model cache (`BLAZE_TEST_MODELS`, or the workspace's
    /// `.dev/models`, where `scripts/fetch-models.sh` puts it).
    pub fn from_build() -> Result<Self> {
        let bin_dir = match std::env::var_os("BLAZE_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let dir = blaze_testing::bin_dir();
                build_binaries(&dir)?;
                dir
            }
        };
        let models = std::env::var_os("BLAZE_TEST_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/models"));
        Self::new(bin_dir, models)
    }
}

/// Builds every binary of the workspace into `bin_dir` (`target/debug` or `target/release`)
/// with the cargo that runs this program; nothing to do outside cargo.
fn build_binaries(bin_dir: &Path) -> Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "--workspace", "--bins"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build --workspace --bins")?;
    if !status.success() {
        bail!("cargo build --workspace --bins failed ({status})");
    }
    Ok(())
}
