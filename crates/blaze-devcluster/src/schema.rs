//! Structural-schema handling of custom resources: pruning, type, required, enum, bound and
//! pattern checks with the messages kube-apiserver gives (its OpenAPI validator's wording),
//! then defaults and `x-kubernetes-validations` through kube-cel.

use serde_json::{Map, Value};

use crate::error::Cause;

/// Removes fields the schema does not declare (CRD "Pruning" rules); returns their paths.
pub fn prune(schema: &Value, value: &mut Value, root: bool) -> Vec<String> {
    let mut removed = Vec::new();
    prune_at(schema, value, root, "", &mut removed);
    removed
}

fn prune_at(schema: &Value, value: &mut Value, root: bool, path: &str, removed: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            map.retain(|k, v| {
                if root && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    return true;
                }
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => {
                        prune_at(s, v, false, &child, removed);
                        true
                    }
                    (None, None) => {
                        let keep = preserve || (props.is_none() && schema.get("type").is_none());
                        if !keep {
                            removed.push(child);
                        }
                        keep
                    }
                }
            });
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune_at(s, v, false, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn invalid(path: &str, v: &Value, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {why}", short(v)),
        field: path.to_owned(),
    }
}

fn type_ok(t: &str, v: &Value, schema: &Value) -> bool {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return v.is_string() || v.is_i64() || v.is_u64();
    }
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every way `value` breaks `schema`, as field causes.
pub fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true))
            && !path.is_empty()
            && let Some(t) = schema.get("type").and_then(Value::as_str)
        {
            out.push(invalid(path, value, format!("{path} in body must be of type {t}: \"null\"")));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_ok(t, value, schema)
    {
        let got = type_name(value);
        out.push(invalid(path, value, format!("{path} in body must be of type {t}: \"{got}\"")));
        return;
    }
    check_enum_and_bounds(schema, value, path, out);
    match value {
        Value::Object(map) => check_object(schema, map, path, out),
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    let join = |k: &str| if path.is_empty() { k.to_owned() } else { format!("{path}.{k}") };
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                out.push(Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: join(r),
                });
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
            check(s, v, &join(k), out);
        }
    }
}

fn check_enum_and_bounds(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(short).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                short(value),
                list.join(", ")
            ),
            field: path.to_owned(),
        });
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let int = |k: &str| schema.get(k).and_then(Value::as_u64);
    if let Some(x) = value.as_f64() {
        if let Some(min) = num("minimum")
            && (x < min || (schema.get("exclusiveMinimum") == Some(&Value::Bool(true)) && x <= min))
        {
            out.push(invalid(
                path,
                value,
                format!("{path} in body should be greater than or equal to {}", fmt_num(min)),
            ));
        }
        if let Some(max) = num("maximum")
            && (x > max || (schema.get("exclusiveMaximum") == Some(&Value::Bool(true)) && x >= max))
        {
            out.push(invalid(
                path,
                value,
                format!("{path} in body should be less than or equal to {}", fmt_num(max)),
            ));
        }
    }
    if let (Some(x), Some(m)) = (value.as_f64(), num("multipleOf"))
        && m > 0.0
        && (x / m).fract().abs() > 1e-9
    {
        out.push(invalid(
            path,
            value,
            format!("{path} in body should be a multiple of {}", fmt_num(m)),
        ));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = int("minLength").filter(|m| len < *m) {
            out.push(invalid(
                path,
                value,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = int("maxLength").filter(|m| len > *m) {
            out.push(invalid(path, value, format!("{path} in body may not be longer than {max}")));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && regex::Regex::new(p).is_ok_and(|re| !re.is_match(s))
        {
            out.push(invalid(path, value, format!("{path} in body should match '{p}'")));
        }
    }
    if let Some(a) = value.as_array() {
        let n = a.len() as u64;
        if let Some(min) = int("minItems").filter(|m| n < *m) {
            out.push(invalid(
                path,
                value,
                format!("{path} in body should have at least {min} items"),
            ));
        }
        if let Some(max) = int("maxItems").filter(|m| n > *m) {
            out.push(Cause {
                reason: "FieldValueTooMany".into(),
                message: format!("Too many: {n}: must have at most {max} items"),
                field: path.to_owned(),
            });
        }
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 { format!("{}", x as i64) } else { x.to_string() }
}

/// Prunes, defaults and validates a custom resource; `old` is the stored object on updates.
/// With `strict` (`fieldValidation=Strict`), unknown fields are an error instead of pruned.
pub fn admit(
    schema: &Value,
    obj: &mut Value,
    old: Option<&Value>,
    validator: &kube_cel::Validator,
    strict: bool,
) -> Result<Vec<Cause>, String> {
    let removed = prune(schema, obj, true);
    if strict && !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(|p| format!("unknown field \"{p}\"")).collect();
        return Err(format!("strict decoding error: {}", list.join(", ")));
    }
    *obj = kube_cel::apply_defaults(schema, obj);
    let mut causes = Vec::new();
    check(schema, obj, "", &mut causes);
    if !causes.is_empty() {
        return Ok(causes);
    }
    if let Err(errs) = validator.validate(schema, obj, old) {
        for e in errs.as_slice() {
            let field =
                if e.field_path.is_empty() { "<nil>".to_owned() } else { e.field_path.clone() };
            let at = crate::meta::at_path(obj, &e.field_path).cloned().unwrap_or(Value::Null);
            causes.push(Cause {
                reason: e.reason.clone().unwrap_or_else(|| "FieldValueInvalid".into()),
                message: format!("Invalid value: {}: {}", short(&at), e.message),
                field,
            });
        }
    }
    Ok(causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_read_like_the_real_servers() {
        let schema = json!({"type": "object", "required": ["spec"], "properties": {"spec": {
            "type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": ["llm", "embedding"]},
                "replicas": {"type": "integer", "minimum": 0},
                "source": {"type": "string", "pattern": "^hf://"}}}}});
        let mut out = Vec::new();
        check(
            &schema,
            &json!({"spec": {"kind": "x", "replicas": -1, "source": "s3://a"}}),
            "",
            &mut out,
        );
        let msgs: Vec<String> = out.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.kind: Unsupported value: \"x\": supported values: \"llm\", \"embedding\"",
                "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
                "spec.source: Invalid value: \"s3://a\": spec.source in body should match '^hf://'",
            ]
        );
        let mut out = Vec::new();
        check(&schema, &json!({"spec": {"replicas": "2"}}), "", &mut out);
        assert_eq!(out[0].field, "spec.kind");
        assert_eq!(
            out[1].message,
            "Invalid value: \"2\": spec.replicas in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn pruning_keeps_declared_and_preserved_fields() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "junk": 1,
            "spec": {"a": "x", "b": 2, "free": {"anything": [1]}}});
        assert_eq!(prune(&schema, &mut v, true), ["junk", "spec.b"]);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"a": "x", "free": {"anything": [1]}}})
        );
    }
}
