//! The resources the server serves: the built-in table and those CRDs add.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Scale subresource paths (`.spec.replicas` style).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    /// Path of the desired replicas.
    pub spec_replicas: String,
    /// Path of the observed replicas.
    pub status_replicas: String,
    /// Path of the label selector string, if any.
    pub label_selector: Option<String>,
}

/// A printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Header.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// Simple JSONPath such as `.spec.replicas`.
    pub json_path: String,
    /// Description.
    pub description: String,
    /// 0 for the default view, more for `-o wide`.
    pub priority: i64,
}

/// Everything the server knows about one resource at one version.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural, the path segment.
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`all`, `blaze`).
    pub categories: Vec<String>,
    /// Has a status subresource (status ignored by the main endpoint, generation tracked).
    pub status: bool,
    /// Scale subresource.
    pub scale: Option<ScalePaths>,
    /// Has the `log` and `binding` subresources (pods).
    pub log: bool,
    /// Served from a CRD: schema validation applies, strategic merge patch does not.
    pub custom: bool,
    /// The structural schema of a custom resource.
    pub schema: Option<Arc<Value>>,
    /// Printer columns (custom resources).
    pub columns: Vec<PrinterColumn>,
    /// Fields a custom resource can be selected by beyond name and namespace (the CRD
    /// version's `selectableFields`, as `spec.color`).
    pub selectable_fields: Vec<String>,
}

impl ResourceInfo {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key, the same for every version of a resource.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Whether the server tracks `metadata.generation` for it.
    pub fn tracks_generation(&self) -> bool {
        self.status || self.custom
    }
}

fn scale(spec: &str, status: &str, selector: Option<&str>) -> Option<ScalePaths> {
    Some(ScalePaths {
        spec_replicas: spec.into(),
        status_replicas: status.into(),
        label_selector: selector.map(Into::into),
    })
}

/// One built-in row: group, version, plural, kind, namespaced, short names, status subresource.
type Row =
    (&'static str, &'static str, &'static str, &'static str, bool, &'static [&'static str], bool);

const BUILTIN: &[Row] = &[
    ("", "v1", "namespaces", "Namespace", false, &["ns"], true),
    ("", "v1", "pods", "Pod", true, &["po"], true),
    ("", "v1", "services", "Service", true, &["svc"], true),
    ("", "v1", "endpoints", "Endpoints", true, &["ep"], false),
    ("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
    ("", "v1", "secrets", "Secret", true, &[], false),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"], false),
    ("", "v1", "events", "Event", true, &["ev"], false),
    ("", "v1", "nodes", "Node", false, &["no"], true),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, &["pvc"], true),
    ("", "v1", "persistentvolumes", "PersistentVolume", false, &["pv"], true),
    ("apps", "v1", "deployments", "Deployment", true, &["deploy"], true),
    ("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"], true),
    ("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"], true),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true),
    ("events.k8s.io", "v1", "events", "Event", true, &["ev"], false),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true, &[], false),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, &["pdb"], true),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, &[], false),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        true,
    ),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, &["netpol"], false),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true, &["ing"], true),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, &[], false),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, &[], false),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, &[], false),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
    ),
    // Created and answered, never stored (`auth::review`).
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        &[],
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
        &[],
        false,
    ),
    ("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", false, &["pc"], false),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
    ),
];

/// The built-in resources.
pub fn builtin() -> Vec<ResourceInfo> {
    BUILTIN
        .iter()
        .map(|&(group, version, plural, kind, namespaced, short, status)| {
            let scale = match plural {
                "deployments" | "replicasets" | "statefulsets" => {
                    scale(".spec.replicas", ".status.replicas", None)
                }
                _ => None,
            };
            let categories = match plural {
                "pods" | "services" | "deployments" | "replicasets" | "statefulsets"
                | "daemonsets" => {
                    vec!["all".to_owned()]
                }
                _ => Vec::new(),
            };
            ResourceInfo {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: kind.to_lowercase(),
                kind: kind.into(),
                namespaced,
                short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                categories,
                status,
                scale,
                log: plural == "pods",
                custom: false,
                schema: None,
                columns: Vec::new(),
                selectable_fields: Vec::new(),
            }
        })
        .collect()
}

/// Resources by `(group, version, plural)`.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_path: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
}

impl Registry {
    /// A registry of `infos`.
    pub fn new(infos: impl IntoIterator<Item = ResourceInfo>) -> Self {
        let by_path = infos
            .into_iter()
            .map(|r| ((r.group.clone(), r.version.clone(), r.plural.clone()), Arc::new(r)))
            .collect();
        Self { by_path }
    }

    /// The resource served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_path.get(&(group.to_owned(), version.to_owned(), plural.to_owned())).cloned()
    }

    /// The resource of `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.by_path.values().find(|r| r.api_version() == api_version && r.kind == kind).cloned()
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.by_path.values()
    }

    /// Groups and their versions, core first, in a stable order.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.by_path.values() {
            let v = out.entry(r.group.clone()).or_default();
            if !v.contains(&r.version) {
                v.push(r.version.clone());
            }
        }
        out
    }

    /// Every resource of one storage key (all versions).
    pub fn versions_of(&self, storage_key: &str) -> Vec<Arc<ResourceInfo>> {
        self.by_path.values().filter(|r| r.storage_key() == storage_key).cloned().collect()
    }
}
