//! `blaze`: the command line of Blaze.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Blaze runs AI inference engines on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "blaze", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Blaze CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds(CrdsArgs),
}

#[derive(Debug, clap::Args)]
struct CrdsArgs {
    /// Write `NAME.yaml` files into this directory instead of printing to standard output.
    #[arg(long, env = "BLAZE_CRDS_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Crds(a) => crds(a),
    }
}

fn crds(args: CrdsArgs) -> anyhow::Result<()> {
    let rendered = blaze_api::crds::render_all()?;
    match args.output_dir {
        None => {
            let docs: Vec<&str> = rendered.iter().map(|(_, y)| y.as_str()).collect();
            print!("{}", docs.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("--output-dir {}: cannot create it", dir.display()))?;
            for (name, yaml) in rendered {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}
