//! The worker library's error type.

/// Everything that can go wrong while loading a model or serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model source could not be read or downloaded.
    #[error("model source {source_name}: {message}")]
    Source {
        /// The source as the user gave it.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The model's files are not something this worker can serve.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to render.
    #[error("chat template: {0}")]
    Template(#[from] minijinja::Error),
    /// Reading a file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON file could not be parsed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Candle(_) => "candle",
            Error::Source { .. } => "source",
            Error::Unsupported(_) => "unsupported",
            Error::Tokenizer(_) => "tokenizer",
            Error::Template(_) => "template",
            Error::Io(_) => "io",
            Error::Json(_) => "json",
        }
    }
}

/// The worker library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
