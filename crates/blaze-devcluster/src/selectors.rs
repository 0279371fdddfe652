//! Label and field selectors (`labelSelector`, `fieldSelector` query parameters).
//!
//! kube-rs has a label selector type (`kube::core::Selector`) but no parser for the string
//! form a request carries, no `<` / `>` requirements and no field selectors, and it matches
//! a map of strings rather than the JSON the store holds; so the server parses and matches
//! both here. Which fields a resource can be selected by is [`crate::selectable`]'s.

use serde_json::Value;

use crate::api::Query;
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::selectable::{self, Field};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),!f`; 400 on anything malformed.
    pub fn parse(s: &str) -> ApiResult<Self> {
        let bad =
            |why: &str| ApiError::bad_request(format!("unable to parse requirement: {why}: {s:?}"));
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_owned())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('>') {
                Req::Gt(k.trim().into(), v.trim().parse().map_err(|_| bad("invalid number"))?)
            } else if let Some((k, v)) = p.split_once('<') {
                Req::Lt(k.trim().into(), v.trim().parse().map_err(|_| bad("invalid number"))?)
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest).ok_or_else(|| bad("invalid set"))?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(rest).ok_or_else(|| bad("invalid set"))?)
            } else {
                Req::Exists(p.to_owned())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Req::Eq(k, v) | Req::Ne(k, v) => (k, vec![v]),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs.iter().map(String::as_str).collect()),
                Req::Exists(k) | Req::NotExists(k) | Req::Gt(k, _) | Req::Lt(k, _) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(bad("invalid label key"));
            }
            if !values.iter().all(|v| valid_value(v)) {
                return Err(bad("invalid label value"));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v),
            Req::Ne(k, v) => get(k) != Some(v),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
}

/// A parsed field selector: `metadata.name=x,status.phase!=Running`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(Field, bool, String)>);

impl FieldSelector {
    /// Parses the selector for objects of `info`; 400 on anything malformed or on a field
    /// the resource cannot be selected by.
    pub fn parse(s: &str, info: &ResourceInfo) -> ApiResult<Self> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(out));
        }
        for part in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(ApiError::bad_request(format!("invalid field selector: {s:?}")));
            }
            out.push((selectable::field(info, field)?, eq, value.trim().to_owned()));
        }
        Ok(Self(out))
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(f, eq, v)| (f.value(obj) == *v) == *eq)
    }
}

/// The label and field selectors of a list, watch or delete-collection request on `info`.
pub(crate) fn from_query(
    query: &Query,
    info: &ResourceInfo,
) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((
        LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), info)?,
    ))
}

/// Whether an object passes both selectors.
pub(crate) fn matches(obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(&obj["metadata"]["labels"]) && fields.matches(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_kubernetes_grammar() {
        let l = json!({"app": "web", "tier": "front", "n": "5"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app=web") && m("app==web") && m("app!=db") && m("tier in (front,back)"));
        assert!(m("app,!missing") && m("env notin (prod)") && m("n>3") && !m("n<3"));
        assert!(!m("app=db") && !m("missing") && !m("tier notin (front)"));
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("a b c=d").is_err());
    }

    #[test]
    fn field_selectors_compare_as_strings() {
        let pods = crate::resources::builtin().into_iter().find(|r| r.plural == "pods").unwrap();
        let o =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let m = |s: &str| FieldSelector::parse(s, &pods).unwrap().matches(&o);
        assert!(m("metadata.name=a") && m("status.phase!=Pending") && m("spec.nodeName="));
        assert!(!m("metadata.namespace=other") && !m("spec.hostNetwork=true"));
        assert!(FieldSelector::parse("nonsense", &pods).is_err());
        assert!(FieldSelector::parse("spec.containers=x", &pods).is_err());
    }
}
