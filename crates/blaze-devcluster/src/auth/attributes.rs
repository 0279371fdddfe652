//! Request attributes as kube-apiserver derives them from a request (`RequestInfoFactory`):
//! a path under `/api/VERSION/` or `/apis/GROUP/VERSION/` with a resource is a resource
//! request (verb from the method, `list`/`watch` for a GET without a name, `deletecollection`
//! for a DELETE without one; namespace, resource, name, subresource from the path); anything
//! else (`/api`, `/apis/apps/v1`, `/version`, `/openapi/v3`) is a non-resource request whose
//! verb is the lowercase method. Also the `403` a denial answers, worded as the real server's.

use http::Method;

use crate::api::Query;
use crate::error::ApiError;

use super::User;

/// What a request asks to do (`authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`... for resources; the lowercase method for non-resource paths.
    pub verb: String,
    /// Whether it names a resource (else `path` is what is asked for).
    pub resource_request: bool,
    /// Namespace; empty for cluster-scoped and all-namespace requests.
    pub namespace: String,
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `log`, `scale`, `token`...).
    pub subresource: String,
    /// Object name, or the `metadata.name` a list or watch selects by field.
    pub name: String,
    /// The request path.
    pub path: String,
}

/// Verbs that come as a path segment before the resource (`/api/v1/watch/pods`).
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];
/// Namespace subresources (`/api/v1/namespaces/NAME/status`) rather than resources in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// The attributes of a request.
    pub fn of_request(method: &Method, path: &str, query: &Query) -> Self {
        let mut out = Self {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_owned(),
            ..Self::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                out.version = (*version).to_owned();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                out.group = (*group).to_owned();
                out.version = (*version).to_owned();
                rest
            }
            _ => return out,
        };
        out.resource_request = true;
        let mut rest = rest;
        let mut special = false;
        if SPECIAL_VERBS.contains(&rest[0]) && rest.len() >= 2 {
            out.verb = rest[0].to_owned();
            rest = &rest[1..];
            special = true;
        } else {
            out.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .to_owned();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            out.namespace = rest[1].to_owned();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        out.resource = rest[0].to_owned();
        if let Some(name) = rest.get(1) {
            out.name = (*name).to_owned();
        }
        if let Some(sub) = rest.get(2).filter(|_| !special) {
            out.subresource = (*sub).to_owned();
        }
        if out.name.is_empty() && out.verb == "get" {
            out.verb = if query.flag("watch") { "watch" } else { "list" }.to_owned();
            out.name = selected_name(query.get("fieldSelector")).unwrap_or_default();
        }
        if out.name.is_empty() && out.verb == "delete" {
            out.verb = "deletecollection".to_owned();
        }
        out
    }

    /// The `403` for `user` denied this, with RBAC's `reason` if any.
    pub fn forbidden(&self, user: &User, reason: &str) -> ApiError {
        let mut message = self.denial(user);
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        if !self.resource_request || self.resource.is_empty() {
            return ApiError::forbidden(format!("forbidden: {message}"));
        }
        ApiError::forbidden_resource(&self.group, &self.resource, &self.name, message)
    }

    /// `User "NAME" cannot VERB ...`, as `responsewriters.forbiddenMessage` words it.
    fn denial(&self, user: &User) -> String {
        let who = &user.name;
        if !self.resource_request {
            return format!("User \"{who}\" cannot {} path \"{}\"", self.verb, self.path);
        }
        let mut resource = self.resource.clone();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        let (verb, group) = (&self.verb, &self.group);
        if self.namespace.is_empty() {
            format!(
                "User \"{who}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" at the cluster scope"
            )
        } else {
            format!(
                "User \"{who}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{}\"",
                self.namespace
            )
        }
    }
}

/// The name a field selector pins with `metadata.name=NAME` (or `==`), if a valid one.
fn selected_name(selector: Option<&str>) -> Option<String> {
    selector?.split(',').find_map(|term| {
        let name = term.strip_prefix("metadata.name==").or(term.strip_prefix("metadata.name="))?;
        let valid = !matches!(name, "" | "." | "..") && !name.contains(['/', '%']);
        valid.then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: &str) -> Attributes {
        Attributes::of_request(&method, path, &Query::parse(Some(query)))
    }

    #[test]
    fn resource_paths_map_to_verbs_and_names() {
        let a = attrs(Method::GET, "/api/v1/namespaces/demo/pods", "");
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "demo", "pods")
        );
        let a = attrs(Method::GET, "/api/v1/pods", "watch=true");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = attrs(Method::GET, "/api/v1/namespaces/demo/pods/web-0/log", "");
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("get", "web-0", "log")
        );
        let a = attrs(Method::DELETE, "/apis/apps/v1/namespaces/demo/deployments", "");
        assert_eq!((a.verb.as_str(), a.group.as_str()), ("deletecollection", "apps"));
        let a =
            attrs(Method::PATCH, "/apis/blaze.ai/v1alpha1/namespaces/d/blazeengines/e/status", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()),
            ("patch", "blazeengines", "status")
        );
        let a = attrs(
            Method::GET,
            "/api/v1/namespaces/demo/configmaps",
            "fieldSelector=metadata.name%3Dcfg&watch=1",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "cfg"));
    }

    #[test]
    fn a_namespace_is_its_own_namespace() {
        let a = attrs(Method::GET, "/api/v1/namespaces/demo", "");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "demo", "demo")
        );
        let a = attrs(Method::PUT, "/api/v1/namespaces/demo/finalize", "");
        assert_eq!((a.resource.as_str(), a.subresource.as_str()), ("namespaces", "finalize"));
        let a = attrs(Method::POST, "/api/v1/namespaces", "");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("create", ""));
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests() {
        for path in
            ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v3"]
        {
            let a = attrs(Method::GET, path, "");
            assert!(!a.resource_request, "{path}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", path));
        }
        assert_eq!(attrs(Method::POST, "/metrics", "").verb, "post");
    }

    #[test]
    fn denials_are_worded_as_kube_apiserver_words_them() {
        let sa = User::service_account("ns", "sa", "");
        let list = attrs(Method::GET, "/api/v1/namespaces/ns/pods", "");
        assert_eq!(
            list.forbidden(&sa, "").message,
            "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"pods\" in API group \"\" in the namespace \"ns\""
        );
        let get = attrs(Method::GET, "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", "");
        assert_eq!(
            get.forbidden(&sa, "").message,
            "clusterroles.rbac.authorization.k8s.io \"admin\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        let log = attrs(Method::GET, "/api/v1/namespaces/ns/pods/p/log", "");
        assert_eq!(
            log.forbidden(&sa, "RBAC: role.rbac.authorization.k8s.io \"gone\" not found").message,
            "pods \"p\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"ns\": RBAC: role.rbac.authorization.k8s.io \"gone\" not found"
        );
        let metrics = attrs(Method::GET, "/metrics", "");
        let e = metrics.forbidden(&sa, "");
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/metrics\""
        );
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
    }
}
