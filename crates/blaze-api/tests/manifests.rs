//! The checked-in CRDs, the examples and the invalid manifests, judged as an API server judges
//! a custom resource: schema defaults applied, unknown fields refused (kubectl's strict field
//! validation), the OpenAPI schema checked by a JSON Schema validator, then the
//! `x-kubernetes-validations` CEL rules evaluated (with `oldSelf` for updates).

#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The `openAPIV3Schema` of the CRD serving `kind`.
fn schema_for(kind: &str) -> Option<Value> {
    blaze_api::crds::all().into_iter().find(|c| c.spec.names.kind == kind).map(|crd| {
        let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref();
        serde_json::to_value(schema.unwrap()).unwrap()
    })
}

/// Every way `obj` (and, for an update, `old`) breaks its CRD, as `path: message` lines.
fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    let kind = obj["kind"].as_str().expect("manifest without kind");
    let schema = schema_for(kind).unwrap_or_else(|| panic!("no CRD serves kind {kind}"));
    let defaulted = kube_cel::apply_defaults(&schema, obj);

    let mut out = Vec::new();
    unknown_fields(&schema, &defaulted, "", true, &mut out);
    let validator = jsonschema::draft4::new(&schema).expect("the generated schema compiles");
    for e in validator.iter_errors(&defaulted) {
        out.push(format!("{}: {}", e.instance_path(), e));
    }
    if let Err(errs) = kube_cel::Validator::new().validate(&schema, obj, old) {
        out.extend(errs.iter().map(|e| format!("{}: {}", e.field_path, e.message)));
    }
    out
}

/// Fields the schema does not declare, which the API server prunes and `kubectl` (strict
/// field validation, the default since 1.27) refuses.
fn unknown_fields(schema: &Value, value: &Value, path: &str, root: bool, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if root && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    continue;
                }
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => unknown_fields(s, v, &child, false, out),
                    (None, None) if props.is_some() => {
                        out.push(format!("{child}: unknown field \"{k}\""));
                    }
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(s, v, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir} holds no YAML files");
    files
}

#[test]
fn checked_in_crds_match_the_types() {
    for dir in ["crds", "charts/blaze/crds"] {
        for (name, yaml) in blaze_api::crds::render_all().unwrap() {
            let on_disk = std::fs::read_to_string(repo_root().join(dir).join(&name));
            assert!(
                on_disk.is_ok_and(|d| d == yaml),
                "{dir}/{name} is out of date with crates/blaze-api: run `make crds` and commit the result"
            );
        }
    }
}

#[test]
fn crds_declare_subresources_columns_names_and_category() {
    for crd in blaze_api::crds::all() {
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some(), "{} has no status subresource", crd.spec.names.kind);
        let scale = sub.scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(cols.contains(&"Age") && cols.contains(&"Ready"), "{cols:?}");
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["blaze".to_owned()][..]));
        assert_eq!(crd.spec.group, "blaze.ai");
        assert_eq!(crd.spec.scope, "Namespaced");
    }
    let engine = blaze_api::crds::all().remove(0);
    assert_eq!(engine.spec.names.short_names.as_deref(), Some(&["be".to_owned()][..]));
    let cols: Vec<String> = engine.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["Kind", "Model", "Ready", "Desired", "P95", "Age"]);
}

/// Every rule compiles, and its estimated cost is within what a real API server accepts.
#[test]
fn every_cel_rule_compiles_within_the_cost_budget() {
    fn walk(node: &kube_cel::CompiledSchema, seen: &mut usize) {
        for v in &node.validations {
            let compiled = v.as_ref().unwrap_or_else(|e| panic!("rule does not compile: {e:?}"));
            let warnings = kube_cel::estimate_rule_cost(&compiled.rule.rule, node);
            assert!(warnings.is_empty(), "{}: {warnings:?}", compiled.rule.rule);
            *seen += 1;
        }
        node.properties.values().for_each(|p| walk(p, seen));
        node.items.iter().for_each(|p| walk(p, seen));
        node.additional_properties.iter().for_each(|p| walk(p, seen));
    }
    let mut seen = 0;
    for kind in ["BlazeEngine", "BlazeRouter"] {
        walk(&kube_cel::compile_schema(&schema_for(kind).unwrap()), &mut seen);
    }
    assert!(seen >= 16, "only {seen} rules found");
}

#[test]
fn every_example_is_valid() {
    let mut kinds = BTreeSet::new();
    for file in yaml_files("manifests/examples") {
        for doc in yaml_docs(&file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            if schema_for(&kind).is_none() {
                assert!(["Secret", "ConfigMap"].contains(&kind.as_str()), "{kind} in {file:?}");
                continue;
            }
            let errs = errors(&doc, None);
            assert!(errs.is_empty(), "{}: {errs:#?}", file.display());
            // What the API server stores must also be what the operator reads.
            let typed: Result<blaze_api::BlazeEngine, _> = serde_json::from_value(doc.clone());
            let typed_router: Result<blaze_api::BlazeRouter, _> = serde_json::from_value(doc);
            assert!(typed.is_ok() || typed_router.is_ok(), "{} does not parse", file.display());
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["BlazeEngine", "BlazeRouter"]);
}

fn invalid_cases() -> Vec<(PathBuf, String, Value)> {
    yaml_files("manifests/invalid")
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let expect = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()))
                .to_owned();
            let doc = yaml_docs(&file).remove(0);
            (file, expect, doc)
        })
        .collect()
}

#[test]
fn every_invalid_manifest_is_rejected_with_its_message() {
    for (file, expect, doc) in invalid_cases() {
        let errs = errors(&doc, None);
        assert!(
            errs.iter().any(|e| e.contains(&expect)),
            "{}: expected an error containing {expect:?}, got {errs:#?}",
            file.display()
        );
    }
}

/// Each rule that judges a single object has an invalid manifest that breaks it; transition
/// rules (`oldSelf`) are covered by `immutable_fields_stay_immutable`.
#[test]
fn every_cel_rule_has_a_negative_case() {
    let expectations: Vec<String> = invalid_cases().into_iter().map(|(_, e, _)| e).collect();
    let text: String = ["blazeengines.yaml", "blazerouters.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(repo_root().join("crds").join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    let crds: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut rules = Vec::new();
    fn collect(v: &Value, rules: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rs)) = m.get("x-kubernetes-validations") {
                    for r in rs {
                        let rule = r["rule"].as_str().unwrap().to_owned();
                        rules.push((rule, r["message"].as_str().unwrap_or_default().to_owned()));
                    }
                }
                m.values().for_each(|c| collect(c, rules));
            }
            Value::Array(a) => a.iter().for_each(|c| collect(c, rules)),
            _ => {}
        }
    }
    crds.iter().for_each(|c| collect(c, &mut rules));
    for (rule, message) in rules.iter().filter(|(r, _)| !r.contains("oldSelf")) {
        assert!(
            expectations.iter().any(|e| message.starts_with(e.as_str())),
            "rule `{rule}` has no manifest in manifests/invalid that breaks it"
        );
    }
}

#[test]
fn immutable_fields_stay_immutable() {
    let old = json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine", "metadata": {"name": "e"},
        "spec": {"kind": "llm", "model": {"source": "file:///m.gguf"}}
    });
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(3);
    assert_eq!(errors(&scaled, Some(&old)), Vec::<String>::new());

    let mut changed = old.clone();
    changed["spec"]["kind"] = json!("embedding");
    let errs = errors(&changed, Some(&old));
    assert!(errs.iter().any(|e| e.contains("spec.kind is immutable")), "{errs:?}");
    // On create there is no old object and the rule does not apply.
    assert_eq!(errors(&changed, None), Vec::<String>::new());
}

#[test]
fn defaults_come_from_the_schema() {
    let obj = json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeRouter", "metadata": {"name": "r"},
        "spec": {"engines": {"names": ["a"]}}
    });
    let d = kube_cel::apply_defaults(&schema_for("BlazeRouter").unwrap(), &obj);
    assert_eq!(d["spec"]["strategy"], "adaptive");
    assert_eq!(d["spec"]["circuitBreaker"]["consecutiveFailures"], 5);
    assert_eq!(d["spec"]["circuitBreaker"]["openSeconds"], 30);
    assert_eq!(d["spec"]["retries"]["budgetPercent"], 20);
    assert_eq!(d["spec"]["healthCheck"]["path"], "/readyz");

    let obj = json!({
        "apiVersion": "blaze.ai/v1alpha1", "kind": "BlazeEngine", "metadata": {"name": "e"},
        "spec": {"kind": "llm", "model": {"source": "hf://org/m"}, "autoscaling": {"mode": "external"}}
    });
    let d = kube_cel::apply_defaults(&schema_for("BlazeEngine").unwrap(), &obj);
    assert_eq!(d["spec"]["autoscaling"]["stableWindowSeconds"], 60);
    assert_eq!(d["spec"]["autoscaling"]["panicWindowSeconds"], 6);
    assert_eq!(d["spec"]["autoscaling"]["scaleDownDelaySeconds"], 300);
    assert_eq!(d["spec"]["autoscaling"]["maxScaleUpRate"], 2.0);
    assert_eq!(d["spec"]["autoscaling"]["tolerance"], 0.1);
    assert_eq!(d["spec"]["resources"]["gpuResourceName"], "nvidia.com/gpu");
    assert_eq!(d["spec"]["model"]["dtype"], "auto");
    // The typed view agrees with what the server filled in.
    let typed: blaze_api::BlazeEngine = serde_json::from_value(d).unwrap();
    assert_eq!(typed.spec.autoscaling.min_replicas, 1);
}
