//! Authentication and authorization, as kube-apiserver does them.
//!
//! ## Who a request comes from
//! - The admin token (the kubeconfig's) is user `system:admin` in group `system:masters`,
//!   which, as on a real server, is allowed everything before RBAC is asked.
//! - A ServiceAccount token is user `system:serviceaccount:NS:NAME` in the groups
//!   `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated`. Tokens
//!   are issued by the TokenRequest subresource (`POST .../serviceaccounts/NAME/token`), as the
//!   kubelet asks for each pod; see [`token`] for their form and checks.
//! - No `Authorization` header is `system:anonymous` in `system:unauthenticated` (what
//!   `--anonymous-auth` gives); a token that is neither of the above is `401`.
//! - `Impersonate-User`/`Impersonate-Group`/`Impersonate-Uid` replace the user for those
//!   allowed the `impersonate` verb on `users`, `serviceaccounts`, `groups` or `uids`
//!   ([`impersonate`]); `Impersonate-Extra-*` headers are ignored.
//!
//! ## What they may do
//! [`attributes`] derives a request's verb, resource and path as the real server does, and
//! [`rbac`] evaluates Roles, ClusterRoles and their bindings; a denial is the real server's
//! `403`; a Role or binding that grants more than its writer holds is refused
//! ([`escalation`]). A fresh cluster has the bootstrap roles that matter here ([`bootstrap`]), and each
//! namespace its `default` ServiceAccount ([`service_accounts`]). `SelfSubjectAccessReview`
//! and `SelfSubjectRulesReview` answer `kubectl auth can-i` ([`review`]).

use http::HeaderMap;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::server::State;
use crate::store::Inner;

pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod impersonate;
pub mod rbac;
pub mod review;
pub mod service_accounts;
pub mod token;

pub use attributes::Attributes;
pub use rbac::Decision;

/// The group allowed everything, whatever RBAC says.
pub const MASTERS: &str = "system:masters";
/// Every authenticated user's group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The anonymous user's group.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The anonymous user.
pub const ANONYMOUS: &str = "system:anonymous";
/// The admin token's user.
pub const ADMIN: &str = "system:admin";

/// Who makes a request (`user.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID (a ServiceAccount's), may be empty.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl User {
    /// The admin token's user.
    pub fn admin() -> Self {
        Self {
            name: ADMIN.into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A request without credentials.
    pub fn anonymous() -> Self {
        Self { name: ANONYMOUS.into(), uid: String::new(), groups: vec![UNAUTHENTICATED.into()] }
    }

    /// ServiceAccount `name` of `namespace`, with its groups.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        let mut groups = service_account_groups(namespace);
        groups.push(AUTHENTICATED.into());
        Self { name: service_account_user(namespace, name), uid: uid.into(), groups }
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The namespace and name of a ServiceAccount user name.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The groups of every ServiceAccount of `namespace` (without `system:authenticated`).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")]
}

/// The user a request's bearer token names: the admin, a ServiceAccount, or anonymous when
/// there is no `Authorization` header; `401` for any other token.
pub fn authenticate(st: &State, headers: &HeaderMap) -> ApiResult<User> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(User::anonymous());
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::unauthorized());
    };
    if subtle::ConstantTimeEq::ct_eq(token.as_bytes(), st.token.as_bytes()).into() {
        return Ok(User::admin());
    }
    token::authenticate(st, token).ok_or_else(ApiError::unauthorized)
}

/// The decision for `user` doing `attrs`: `system:masters` may do anything, others what
/// RBAC allows.
pub fn authorize(st: &State, user: &User, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision::Allow(String::new());
    }
    let inner = st.store.read();
    rbac::authorize(&StorePolicy(&inner), user, attrs)
}

/// `Ok` when `user` may do `attrs`, else the real server's `403`.
pub fn check(st: &State, user: &User, attrs: &Attributes) -> ApiResult<()> {
    match authorize(st, user, attrs) {
        Decision::Allow(_) => Ok(()),
        Decision::NoOpinion(reason) => Err(attrs.forbidden(user, &reason)),
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// The RBAC objects of the store.
pub struct StorePolicy<'a>(pub &'a Inner);

impl StorePolicy<'_> {
    fn objects(&self, plural: &str) -> Option<&crate::store::Objects> {
        self.0.objects(&format!("{RBAC}/{plural}"))
    }

    fn one(&self, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects(plural)?.get(&(ns.to_owned(), name.to_owned())).map(|o| &**o)
    }
}

impl rbac::Policy for StorePolicy<'_> {
    fn cluster_role_bindings(&self) -> Vec<&Value> {
        self.objects("clusterrolebindings")
            .into_iter()
            .flat_map(|m| m.values().map(|o| &**o))
            .collect()
    }

    fn role_bindings(&self, namespace: &str) -> Vec<&Value> {
        let Some(map) = self.objects("rolebindings") else { return Vec::new() };
        map.range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, o)| &**o)
            .collect()
    }

    fn cluster_role(&self, name: &str) -> Option<&Value> {
        self.one("clusterroles", "", name)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.one("roles", namespace, name)
    }
}
