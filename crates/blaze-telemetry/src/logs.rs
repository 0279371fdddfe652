//! Logs: one format flag and one set-up for every binary.

use std::fmt;

use clap::ValueEnum;

/// Log line format (`--log-format`, `BLAZE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum)]
pub enum LogFormat {
    /// Human-readable (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The `--log-format` flag of a binary's command line (`#[command(flatten)]`; global, so it
/// may follow a subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log pipelines. `RUST_LOG` sets the level.
    #[arg(long, env = "BLAZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Starts logging as the flag says ([`init`]).
    pub fn init(&self, default_filter: &str) {
        init(self.log_format, default_filter);
    }
}

/// Starts logging in `format` to standard error, filtered by `RUST_LOG` or else by
/// `default_filter` (`info`, say). Colour only on a terminal: `kubectl logs` and log files
/// would show its escape codes as text.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_the_spelling_the_flag_takes() {
        for f in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::from_str(&f.to_string(), false), Ok(f));
        }
    }
}
