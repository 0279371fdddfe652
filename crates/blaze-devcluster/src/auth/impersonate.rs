//! User impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`), as
//! kube-apiserver's impersonation filter does it: the requesting user must be allowed the
//! `impersonate` verb on each thing asked for (`users`, or `serviceaccounts` in the
//! account's namespace for a `system:serviceaccount:NS:NAME` user; `groups`; `uids` in
//! `authentication.k8s.io`), and the request then runs as the impersonated user. A
//! ServiceAccount impersonated without groups gets its own; every impersonated user but
//! `system:anonymous` gets `system:authenticated`.

use http::HeaderMap;

use super::{
    ANONYMOUS, AUTHENTICATED, Attributes, UNAUTHENTICATED, User, parse_service_account_user,
    service_account_groups,
};
use crate::error::{ApiError, ApiResult};
use crate::server::State;

/// The user `user` asks to act as, or `user` itself without impersonation headers.
pub fn impersonate(st: &State, user: User, headers: &HeaderMap) -> ApiResult<User> {
    let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_owned();
    let name = headers.get("impersonate-user").map(text);
    let groups: Vec<String> = headers.get_all("impersonate-group").iter().map(text).collect();
    let uid = headers.get("impersonate-uid").map(text);
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() {
            return Ok(user);
        }
        return Err(ApiError::internal(format!(
            "Internal Server Error: requested groups {groups:?} without impersonating a user"
        )));
    };
    let asked = |group: &str, resource: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Attributes::default()
    };
    let service_account = parse_service_account_user(&name);
    let target = match service_account {
        Some((ns, sa)) => asked("", "serviceaccounts", ns, sa),
        None => asked("", "users", "", &name),
    };
    super::check(st, &user, &target)?;
    for g in &groups {
        super::check(st, &user, &asked("", "groups", "", g))?;
    }
    if let Some(uid) = &uid {
        super::check(st, &user, &asked("authentication.k8s.io", "uids", "", uid))?;
    }
    let mut out_groups = match service_account {
        Some((ns, _)) if groups.is_empty() => service_account_groups(ns),
        _ => groups,
    };
    let has = |gs: &[String], g: &str| gs.iter().any(|x| x == g);
    if name == ANONYMOUS {
        if !has(&out_groups, UNAUTHENTICATED) {
            out_groups.push(UNAUTHENTICATED.into());
        }
    } else if !has(&out_groups, AUTHENTICATED) && !has(&out_groups, UNAUTHENTICATED) {
        out_groups.push(AUTHENTICATED.into());
    }
    Ok(User { name, uid: uid.unwrap_or_default(), groups: out_groups })
}
