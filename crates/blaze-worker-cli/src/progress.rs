//! How far `blaze-worker download` has got, shared by the worker, which logs it every few
//! seconds, and the operator, which reads the init container's last progress line (its log
//! through the `pods/log` subresource) into the engine's `ModelLoaded` condition.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One progress report of a file being downloaded. In the worker's JSON log these are the
/// fields of the line (`fields.file`, `fields.bytes`, ...); its message is [`Self`]'s
/// `Display`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadProgress {
    /// The file being fetched (a `.gguf`, a safetensors shard).
    pub file: String,
    /// Its bytes on disk so far.
    pub bytes: u64,
    /// Its size, when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes per second since the previous report.
    pub bytes_per_second: f64,
}

impl DownloadProgress {
    /// The last progress report in `log`, the JSON lines `blaze-worker download
    /// --log-format json` writes; other lines are skipped.
    pub fn last_in(log: &str) -> Option<Self> {
        log.lines().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            serde_json::from_value(v.get("fields")?.clone()).ok()
        })
    }

    /// Percent done, when the size is known.
    pub fn percent(&self) -> Option<f64> {
        self.total.filter(|t| *t > 0).map(|t| 100.0 * self.bytes as f64 / t as f64)
    }
}

/// `model.gguf: 1.2 GiB of 4.6 GiB (26%) at 31.5 MiB/s`.
impl fmt::Display for DownloadProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, Bytes(self.bytes as f64))?;
        if let (Some(total), Some(pct)) = (self.total, self.percent()) {
            write!(f, " of {} ({pct:.0}%)", Bytes(total as f64))?;
        }
        write!(f, " at {}/s", Bytes(self.bytes_per_second))
    }
}

/// A byte count in binary units, one decimal above KiB.
struct Bytes(f64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let (mut v, mut unit) = (self.0.max(0.0), 0);
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 { write!(f, "{v:.0} B") } else { write!(f, "{v:.1} {}", UNITS[unit]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bytes: u64, total: Option<u64>, rate: f64) -> DownloadProgress {
        DownloadProgress { file: "model.gguf".into(), bytes, total, bytes_per_second: rate }
    }

    #[test]
    fn reads_as_a_person_would_say_it() {
        let gib = 1u64 << 30;
        let half = p(gib + gib / 5, Some(4 * gib + gib * 6 / 10), 31.5 * 1048576.0);
        assert_eq!(half.to_string(), "model.gguf: 1.2 GiB of 4.6 GiB (26%) at 31.5 MiB/s");
        assert_eq!(p(512, None, 0.0).to_string(), "model.gguf: 512 B at 0 B/s");
        assert_eq!(p(0, Some(0), 1.0).percent(), None);
    }

    #[test]
    fn the_last_progress_line_of_a_json_log_is_found() {
        // As tracing-subscriber's JSON format writes a line: the fields under `fields`.
        let line = |bytes: u64| {
            serde_json::json!({
                "timestamp": "2026-12-06T00:00:00Z", "level": "INFO",
                "fields": {"message": "downloading", "file": "model.gguf", "bytes": bytes,
                           "total": 100, "bytes_per_second": 10.0},
                "target": "blaze_worker::source::hub",
            })
            .to_string()
        };
        let done = r#"{"level":"INFO","fields":{"message":"downloaded","url":"u","bytes":100}}"#;
        let log = [line(10), line(60), done.to_owned(), "not json".to_owned()].join("\n");
        assert_eq!(DownloadProgress::last_in(&log), Some(p(60, Some(100), 10.0)));
        assert_eq!(DownloadProgress::last_in(done), None);
    }
}
