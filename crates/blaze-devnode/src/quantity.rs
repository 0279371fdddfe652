//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `1e3`) and resource lists.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Parses a quantity into its value as a float (`500m` is 0.5, `1Ki` is 1024).
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

/// Resource amounts in integral units: millicores for `cpu`, bytes for `memory` and
/// `ephemeral-storage`, a count for everything else (`pods`, `nvidia.com/gpu`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i64>);

impl Resources {
    /// Converts a Kubernetes resource list; unparsable entries are skipped.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut out = BTreeMap::new();
        for (name, q) in list {
            if let Some(v) = parse(&q.0) {
                let scaled = if name == "cpu" { v * 1000.0 } else { v };
                out.insert(name.clone(), scaled.ceil() as i64);
            }
        }
        Self(out)
    }

    /// The amount of `name` (0 when absent).
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Converts back to a Kubernetes resource list.
    pub fn to_list(&self) -> BTreeMap<String, Quantity> {
        self.0
            .iter()
            .map(|(k, v)| {
                let q = if k == "cpu" && v % 1000 != 0 {
                    format!("{v}m")
                } else if k == "cpu" {
                    (v / 1000).to_string()
                } else {
                    v.to_string()
                };
                (k.clone(), Quantity(q))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("1.5G"), Some(1.5e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("12x"), None);
    }

    #[test]
    fn resource_lists_round_trip() {
        let list: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity("250m".into())),
            ("memory".to_string(), Quantity("1Mi".into())),
            ("nvidia.com/gpu".to_string(), Quantity("2".into())),
        ]
        .into();
        let r = Resources::from_list(&list);
        assert_eq!((r.get("cpu"), r.get("memory"), r.get("nvidia.com/gpu")), (250, 1048576, 2));
        assert_eq!(r.to_list()["cpu"], Quantity("250m".into()));
        assert_eq!(Resources::from_list(&r.to_list()), r);
    }
}
