//! Create, update and delete, with the object semantics of the API conventions: server-set
//! metadata, optimistic concurrency, generation, the status subresource split, finalizers.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::apply::{self, Shape};
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::{self, finalizers, is_deleting, metadata_mut};
use crate::resources::ResourceInfo;
use crate::server::State;
use crate::store::Inner;

/// Built-in resources whose kinds have no `spec` (nor `status`): there the fields are unknown
/// and dropped rather than decoded.
const WITHOUT_SPEC: &[&str] = &[
    "configmaps",
    "secrets",
    "serviceaccounts",
    "events",
    "endpoints",
    "endpointslices",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "priorityclasses",
];

/// Who writes, and how.
pub struct Writer<'a> {
    /// Server state.
    pub st: &'a State,
    /// The resource written.
    pub info: &'a ResourceInfo,
    /// Field manager for `managedFields`.
    pub manager: String,
    /// `dryRun=All`: validate, do not store.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error rather than dropped.
    pub strict: bool,
    /// Who writes, for RBAC's escalation check; `None` for the server's own controllers.
    pub user: Option<crate::auth::User>,
    /// Admission warnings for the response's `Warning` headers.
    pub warnings: parking_lot::Mutex<Vec<String>>,
}

/// Whether the caller already set `managedFields` (server-side apply) or the write records an
/// `Update` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// Record an `Update` by the writer's manager.
    Record,
    /// Keep what the object carries.
    Keep,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted after the owner, by the collector.
    Background,
    /// The owner waits (finalizer `foregroundDeletion`) until its dependents are gone.
    Foreground,
    /// Dependents lose their owner reference (finalizer `orphan`).
    Orphan,
}

/// Options of a delete (`DeleteOptions`).
#[derive(Debug, Clone)]
pub struct DeleteOpts {
    /// Propagation policy.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl Writer<'_> {
    fn shape(&self) -> Shape<'_> {
        Shape { schema: self.info.schema.as_deref(), custom: self.info.custom }
    }

    fn key(&self) -> String {
        self.info.storage_key()
    }

    fn commit(&self, inner: &mut Inner, obj: Value) -> Arc<Value> {
        if self.dry_run {
            return Arc::new(obj);
        }
        let key = self.key();
        let stored = inner.put(&key, obj);
        crate::event_versions::mirror_put(inner, &key, &stored);
        stored
    }

    /// Checks `apiVersion` and `kind` of a body and fills them in when missing.
    pub fn check_type(&self, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request must be a JSON object"));
        }
        let want = self.info.api_version();
        let group_of = |v: &str| v.rsplit_once('/').map(|(g, _)| g.to_owned()).unwrap_or_default();
        match obj["apiVersion"].as_str() {
            None | Some("") => obj["apiVersion"] = json!(want),
            Some(v) if group_of(v) == self.info.group => obj["apiVersion"] = json!(want),
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )));
            }
        }
        match obj["kind"].as_str() {
            None | Some("") => obj["kind"] = json!(self.info.kind),
            Some(k) if k == self.info.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.info.kind
                )));
            }
        }
        self.check_shape(obj)
    }

    /// Refuses what kube-apiserver could not decode into the kind's Go type: a `metadata`,
    /// or a built-in kind's `spec` or `status`, that is not an object.
    fn check_shape(&self, obj: &Value) -> ApiResult<()> {
        let (kind, version) = (&self.info.kind, &self.info.version);
        let mut fields = vec![("metadata", "v1.ObjectMeta".to_owned())];
        if !self.info.custom && !WITHOUT_SPEC.contains(&self.info.plural.as_str()) {
            fields.push(("spec", format!("{version}.{kind}Spec")));
            fields.push(("status", format!("{version}.{kind}Status")));
        }
        for (field, go_type) in fields {
            let found = match &obj[field] {
                Value::Null | Value::Object(_) => continue,
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
            };
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal {found} into Go struct field {kind}.{field} of type {go_type}"
            )));
        }
        Ok(())
    }

    fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&self.info.group, &self.info.kind, name, causes)
    }

    /// Creates `obj` in namespace `ns` (empty for cluster-scoped resources).
    pub fn create(
        &self,
        inner: &mut Inner,
        ns: &str,
        mut obj: Value,
        managed: Managed,
    ) -> ApiResult<Arc<Value>> {
        self.check_type(&mut obj)?;
        let m = metadata_mut(&mut obj);
        if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
            && let Some(g) = m.get("generateName").and_then(Value::as_str)
        {
            let name = format!("{g}{}", meta::random_suffix());
            m.insert("name".into(), json!(name));
        }
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(why) = meta::invalid_name(&name) {
            let cause = Cause {
                reason: "FieldValueRequired".into(),
                message: why,
                field: "metadata.name".into(),
            };
            return Err(self.invalid(&name, vec![cause]));
        }
        self.check_namespace(inner, m, ns)?;
        if inner.get(&self.key(), ns, &name).is_some() {
            return Err(ApiError::already_exists(&self.info.group, &self.info.plural, &name));
        }
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
        if managed == Managed::Record {
            m.remove("managedFields");
        }
        m.insert("uid".into(), json!(meta::uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        if self.info.tracks_generation() {
            m.insert("generation".into(), json!(1));
        }
        if self.info.status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        crate::defaults::on_create(self.info, &mut obj)?;
        self.admit(inner, &mut obj, None, &name, "")?;
        if managed == Managed::Record {
            apply::record_update(
                None,
                &mut obj,
                &self.manager,
                "",
                &self.info.api_version(),
                self.shape(),
            );
        }
        Ok(self.commit(inner, obj))
    }

    fn check_namespace(
        &self,
        inner: &Inner,
        m: &mut serde_json::Map<String, Value>,
        ns: &str,
    ) -> ApiResult<()> {
        if !self.info.namespaced {
            m.remove("namespace");
            return Ok(());
        }
        match m.get("namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                m.insert("namespace".into(), json!(ns));
            }
        }
        match inner.get("/namespaces", "", ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if is_deleting(&n) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                self.info.plural,
                m.get("name").and_then(Value::as_str).unwrap_or_default()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Schema validation, defaulting and pruning of custom resources; CRD acceptance; RBAC
    /// escalation; Pod Security (whose warnings are kept for the response).
    fn admit(
        &self,
        inner: &Inner,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
        sub: &str,
    ) -> ApiResult<()> {
        if let Some(schema) = &self.info.schema {
            let causes =
                crate::schema::admit(schema, obj, old, &self.st.validator.lock(), self.strict)
                    .map_err(ApiError::bad_request)?;
            if !causes.is_empty() {
                return Err(self.invalid(name, causes));
            }
        }
        if self.info.group == "apiextensions.k8s.io" {
            crate::crd::accept(obj).map_err(|c| self.invalid(name, c))?;
        }
        if self.info.group == "rbac.authorization.k8s.io"
            && let Some(user) = &self.user
        {
            crate::auth::escalation::admit(inner, user, &self.info.plural, obj)?;
        }
        let warnings =
            crate::pod_security::admission::admit(inner, self.info, sub, obj, old, name)?;
        self.warnings.lock().extend(warnings);
        Ok(())
    }

    /// Replaces an object. `sub` is `""`, `"status"` or `"scale"`: the main endpoint keeps the
    /// stored status, `status` keeps everything but the status.
    pub fn update(
        &self,
        inner: &mut Inner,
        ns: &str,
        name: &str,
        mut new: Value,
        sub: &str,
        managed: Managed,
    ) -> ApiResult<Arc<Value>> {
        let old = inner
            .get(&self.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&self.info.group, &self.info.plural, name))?;
        self.check_type(&mut new)?;
        let body_name = new["metadata"]["name"].as_str().unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        match new["metadata"]["resourceVersion"].as_str() {
            Some(rv)
                if !rv.is_empty()
                    && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default() =>
            {
                return Err(ApiError::conflict(
                    &self.info.group,
                    &self.info.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            _ => {}
        }
        if sub == "status" {
            let status = new.get("status").cloned();
            let managed_fields = new["metadata"].get("managedFields").cloned();
            new = (*old).clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
            if let (Managed::Keep, Some(mf)) = (managed, managed_fields) {
                metadata_mut(&mut new).insert("managedFields".into(), mf);
            }
        } else if self.info.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        self.carry_metadata(&old, &mut new, ns, name);
        if managed == Managed::Record {
            new["metadata"].as_object_mut().map(|m| m.remove("managedFields"));
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            if new["metadata"]["managedFields"].is_null() {
                metadata_mut(&mut new).remove("managedFields");
            }
        }
        self.admit(inner, &mut new, Some(&old), name, sub)?;
        if self.info.tracks_generation() && spec_changed(&old, &new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        if managed == Managed::Record {
            apply::record_update(
                Some(&old),
                &mut new,
                &self.manager,
                sub,
                &self.info.api_version(),
                self.shape(),
            );
        }
        if same_ignoring_bookkeeping(&old, &new) {
            return Ok(old);
        }
        if is_deleting(&new) && finalizers(&new).is_empty() {
            return Ok(self.finish_delete(inner, ns, name).unwrap_or(old));
        }
        Ok(self.commit(inner, new))
    }

    fn carry_metadata(&self, old: &Value, new: &mut Value, ns: &str, name: &str) {
        let om = &old["metadata"];
        let m = metadata_mut(new);
        m.insert("name".into(), json!(name));
        if self.info.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("selfLink");
    }

    /// Deletes an object: marks it (deletionTimestamp) while finalizers remain, removes it
    /// otherwise.
    pub fn delete(
        &self,
        inner: &mut Inner,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Arc<Value>> {
        let old = inner
            .get(&self.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&self.info.group, &self.info.plural, name))?;
        let conflict =
            |why: String| ApiError::conflict(&self.info.group, &self.info.plural, name, &why);
        if let Some(uid) = opts.uid.as_deref().filter(|u| *u != meta::uid_of(&old)) {
            return Err(conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid_of(&old)
            )));
        }
        let rv = old["metadata"]["resourceVersion"].as_str().unwrap_or_default();
        if let Some(want) = opts.resource_version.as_deref().filter(|r| *r != rv) {
            return Err(conflict(format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
            )));
        }
        let mut fins = finalizers(&old);
        let extra = match opts.propagation {
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
            Propagation::Background => None,
        };
        let is_namespace = self.info.plural == "namespaces" && self.info.group.is_empty();
        if is_namespace && !is_deleting(&old) {
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = json!(meta::now());
            new["status"] = json!({"phase": "Terminating"});
            self.st.gc.notify_one();
            return Ok(self.commit(inner, new));
        }
        if let Some(f) = extra.filter(|f| !fins.iter().any(|x| x == f)) {
            fins.push(f.to_owned());
        }
        if !fins.is_empty() || is_namespace {
            let mut new = (*old).clone();
            if !is_deleting(&new) {
                new["metadata"]["deletionTimestamp"] = json!(meta::now());
                new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            new["metadata"]["finalizers"] = json!(fins);
            self.st.gc.notify_one();
            if same_ignoring_bookkeeping(&old, &new) {
                return Ok(old);
            }
            return Ok(self.commit(inner, new));
        }
        Ok(self.finish_delete(inner, ns, name).unwrap_or(old))
    }

    /// Removes an object for good (and, for a CRD, every object it served).
    pub fn finish_delete(&self, inner: &mut Inner, ns: &str, name: &str) -> Option<Arc<Value>> {
        if self.dry_run {
            return inner.get(&self.key(), ns, name);
        }
        let gone = inner.remove(&self.key(), ns, name)?;
        crate::event_versions::mirror_remove(inner, &self.key(), ns, name);
        if self.info.group == "apiextensions.k8s.io" {
            crate::crd::remove_served(inner, &gone);
        }
        self.st.gc.notify_one();
        Some(gone)
    }
}

/// Whether anything but metadata and status changed.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// Whether `new` differs from `old` only in resourceVersion and managedFields timestamps.
fn same_ignoring_bookkeeping(old: &Value, new: &Value) -> bool {
    let norm = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                mf.iter_mut().for_each(|e| {
                    e.as_object_mut().map(|e| e.remove("time"));
                });
            }
        }
        v
    };
    norm(old) == norm(new)
}
