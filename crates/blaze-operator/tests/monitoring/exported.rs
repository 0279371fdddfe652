//! The series Blaze's components can show on `/metrics`, read from their code.
//!
//! Every metric is declared in a `blaze_telemetry::metrics!` block: a struct whose fields read
//! `field: Type = "name", "help"[, make];`. The struct is created with `S::create(registry)`
//! (or `Self::create` inside `impl S`), often in a sub-registry, `registry
//! .sub_registry_with_prefix("blaze_router")`, whose prefix joins the name with `_`.
//! prometheus-client then writes a counter as `NAME_total`, a histogram as `NAME_bucket`,
//! `NAME_sum` and `NAME_count`, and a gauge as `NAME`.
//!
//! A scrape would not do: prometheus-client writes nothing for a labelled family that has seen
//! no traffic yet, so a fresh worker's `/metrics` lacks its error counts and cache lookups.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a metric is, which decides the series it makes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One field of a `metrics!` block.
#[derive(Debug)]
struct Declared {
    /// The struct it belongs to.
    owner: String,
    name: String,
    kind: Kind,
}

/// The series names the components under `crates` export.
pub fn exported(crates: &[PathBuf]) -> BTreeSet<String> {
    crates.iter().flat_map(|dir| exported_by(dir)).collect()
}

/// The series names of the crate in `dir` (struct names are unique only within a crate).
fn exported_by(dir: &Path) -> BTreeSet<String> {
    let mut declared = Vec::new();
    let mut prefixes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    {
        for file in rust_files(&dir.join("src")) {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let here = file.display();
            assert!(
                !has_literal_registration(&text),
                "{here} registers a metric outside blaze_telemetry::metrics!: declare it in one \
                 (dashboards and alerts are checked against those declarations)"
            );
            declared.extend(blocks(&text).flat_map(|b| fields(b, &here.to_string())));
            for (owner, prefix) in creations(&text) {
                prefixes.entry(owner).or_default().insert(prefix);
            }
        }
    }
    let mut out = BTreeSet::new();
    for d in declared {
        let Some(seen) = prefixes.get(&d.owner) else {
            panic!("{} ({}) is never created with ::create(registry)", d.owner, d.name)
        };
        // A struct created in a prefixed sub-registry anywhere is exported with that prefix;
        // an unprefixed registry beside it is one of its own (for tests and benchmarks).
        let named: Vec<_> = seen.iter().filter(|p| !p.is_empty()).collect();
        let full: Vec<String> = if named.is_empty() {
            vec![d.name.clone()]
        } else {
            named.iter().map(|p| format!("{p}_{}", d.name)).collect()
        };
        for f in full {
            match d.kind {
                Kind::Counter => out.insert(format!("{f}_total")),
                Kind::Gauge => out.insert(f),
                Kind::Histogram => {
                    out.extend(["bucket", "sum", "count"].map(|s| format!("{f}_{s}")));
                    true
                }
            };
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The file without its comment lines (doc comments may show `metrics!` examples).
fn code(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Whether `text` calls `register("name", ...)` or `register_with_unit("name", ...)`.
fn has_literal_registration(text: &str) -> bool {
    ["register(", "register_with_unit("].iter().any(|call| {
        text.match_indices(call).any(|(i, _)| text[i + call.len()..].trim_start().starts_with('"'))
    })
}

/// The part of `text` from `open` (an opening bracket) to its closing one, string literals
/// skipped.
fn balanced(text: &str, open: usize) -> &str {
    let (o, c) = match text.as_bytes()[open] {
        b'{' => ('{', '}'),
        b'(' => ('(', ')'),
        other => panic!("no bracket at {open}: {}", other as char),
    };
    let (mut depth, mut in_str, mut escaped) = (0, false, false);
    for (i, ch) in text[open..].char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            _ if in_str => {}
            _ if ch == o => depth += 1,
            _ if ch == c => {
                depth -= 1;
                if depth == 0 {
                    return &text[open..=open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced {o} at {open}")
}

/// Each `metrics! { ... }` block of `text`.
fn blocks(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("metrics! {").map(|(i, m)| balanced(text, i + m.len() - 1))
}

/// The metrics one block declares.
fn fields(block: &str, file: &str) -> Vec<Declared> {
    let at = block.find("struct ").unwrap_or_else(|| panic!("no struct in a block of {file}"));
    let rest = &block[at + "struct ".len()..];
    let owner: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    let body = balanced(rest, rest.find('{').unwrap());
    let body = &body[1..body.len() - 1];
    split_fields(body)
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let decl: String = f
                .lines()
                .filter(|l| !l.trim_start().starts_with("#["))
                .collect::<Vec<_>>()
                .join(" ");
            let (ty, value) = decl
                .split_once(':')
                .and_then(|(_, rest)| rest.split_once('='))
                .unwrap_or_else(|| panic!("{file}: cannot read the field {decl:?} of {owner}"));
            let name = value.trim().strip_prefix('"').and_then(|v| v.split_once('"'));
            let name = name.unwrap_or_else(|| panic!("{file}: no name in {decl:?}")).0;
            let kind = if ty.contains("Histogram") {
                Kind::Histogram
            } else if ty.contains("Counter") {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            Declared { owner: owner.clone(), name: name.to_owned(), kind }
        })
        .collect()
}

/// `body` split at each `;` outside string literals and brackets.
fn split_fields(body: &str) -> Vec<&str> {
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i32);
    let (mut in_str, mut escaped) = (false, false);
    for (i, ch) in body.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            _ if in_str => {}
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out
}

/// `(struct, prefix)` of each `S::create(...)` or `Self::create(...)` in `text`; the prefix is
/// that of `sub_registry_with_prefix("...")` in the argument, or empty.
fn creations(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, m) in text.match_indices("::create(") {
        let before = &text[..i];
        let ident_start =
            before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |j| j + 1);
        let mut owner = before[ident_start..].to_owned();
        if owner == "Self" {
            let Some(imp) = before.rfind("impl ") else { continue };
            owner = before[imp + 5..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
        }
        let arg = balanced(text, i + m.len() - 1);
        let key = "sub_registry_with_prefix(\"";
        let prefix = arg
            .find(key)
            .and_then(|p| arg[p + key.len()..].split_once('"'))
            .map_or(String::new(), |(p, _)| p.to_owned());
        out.push((owner, prefix));
    }
    out
}
