//! ServiceAccount tokens and the TokenRequest subresource.
//!
//! A token is a JWT of the claims a real bound service-account token carries (`iss`, `sub`,
//! `aud`, `exp`, `iat`, `nbf`, and `kubernetes.io` with the namespace, the ServiceAccount's
//! name and UID and, when bound, the pod's). Where kube-apiserver signs with an RSA key and
//! publishes it for others to verify, this server signs with HMAC-SHA256 under a key only it
//! holds: nothing else verifies these tokens, and HMAC needs no key-pair machinery. The key is
//! kept in the data directory (`sa-signing.key`), so tokens survive a restart.
//!
//! A token authenticates only while it has not expired, names this server among its
//! audiences, its ServiceAccount still exists with the same UID and, for a token bound to a
//! pod, that pod does too: deleting either revokes it, as on a real server. A pod-bound token
//! asked for 3607 seconds (what a kubelet asks for) is valid for a year, as kube-apiserver's
//! `--service-account-extend-token-expiration` (on by default) makes it; the status still
//! reports the requested expiry.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::User;
use crate::api::{Ctx, json_response};
use crate::error::{ApiError, ApiResult, Cause};
use crate::server::State;

/// The audience and issuer of this server's tokens, as a cluster's default.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest lifetime a TokenRequest may ask for.
const MIN_EXPIRATION: i64 = 600;
/// What a TokenRequest gets when it asks for none.
const DEFAULT_EXPIRATION: i64 = 3600;
/// What a kubelet asks for, extended to [`EXTENDED_EXPIRATION`] for pod-bound tokens.
const KUBELET_EXPIRATION: i64 = 3607;
/// A year.
const EXTENDED_EXPIRATION: i64 = 365 * 24 * 3600;
/// The longest lifetime honoured (kube-apiserver caps at 2^32 seconds).
const MAX_EXPIRATION: i64 = 1 << 32;

/// The signing key kept in `dir` (made and saved there on first use), or a fresh one.
pub fn load_or_generate_key(dir: Option<&Path>) -> crate::Result<[u8; 32]> {
    let Some(dir) = dir else { return Ok(rand::random()) };
    let path = dir.join("sa-signing.key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let key: [u8; 32] = rand::random();
    crate::persist::atomic_write(&path, &key)?;
    Ok(key)
}

/// HMAC-SHA256 (RFC 2104) of `msg` under a 32-byte key.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

/// A signed token of `claims`.
pub fn sign(key: &[u8; 32], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// The claims of a token signed with `key`, if the signature holds and `now` (Unix seconds)
/// is within its lifetime.
pub fn verify(key: &[u8; 32], token: &str, now: i64) -> Option<Value> {
    let (signed, sig) = token.rsplit_once('.')?;
    let (_, payload) = signed.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = hmac_sha256(key, signed.as_bytes());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(sig.as_slice(), expected.as_slice())) {
        return None;
    }
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let live = claims["exp"].as_i64().is_some_and(|exp| now < exp)
        && claims["nbf"].as_i64().is_none_or(|nbf| nbf <= now);
    live.then_some(claims)
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The ServiceAccount a token stands for, if it is valid now (see the module docs).
pub fn authenticate(st: &State, token: &str) -> Option<User> {
    let claims = verify(&st.signing_key, token, unix_now())?;
    let audiences = claims["aud"].as_array()?;
    if !audiences.iter().any(|a| a == API_AUDIENCE) {
        return None;
    }
    let k8s = &claims["kubernetes.io"];
    let ns = k8s["namespace"].as_str()?;
    let (name, uid) =
        (k8s["serviceaccount"]["name"].as_str()?, k8s["serviceaccount"]["uid"].as_str()?);
    let inner = st.store.read();
    let sa = inner.get("/serviceaccounts", ns, name)?;
    if sa["metadata"]["uid"] != uid {
        return None;
    }
    if let Some(pod) = k8s.get("pod") {
        let live = inner.get("/pods", ns, pod["name"].as_str()?)?;
        if live["metadata"]["uid"] != pod["uid"] {
            return None;
        }
    }
    Some(User::service_account(ns, name, uid))
}

/// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: a token for the ServiceAccount,
/// optionally bound to a pod (`spec.boundObjectRef`), answered as a TokenRequest.
pub fn request(st: &State, ctx: &Ctx, ns: &str, name: &str) -> ApiResult<axum::response::Response> {
    let body = if ctx.body.is_empty() { json!({}) } else { ctx.object()? };
    let spec = &body["spec"];
    let requested = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_EXPIRATION);
    if requested < MIN_EXPIRATION {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            format!("Invalid value: {requested}: may not specify a duration less than 10 minutes"),
        ));
    }
    let audiences = match spec["audiences"].as_array() {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([API_AUDIENCE]),
    };
    let inner = st.store.read();
    let sa = inner
        .get("/serviceaccounts", ns, name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let bound = &spec["boundObjectRef"];
    let pod = if bound.is_null() { None } else { Some(bound_pod(&inner, ns, name, bound)?) };
    drop(inner);
    let now = unix_now();
    let lifetime = match &pod {
        Some(_) if requested == KUBELET_EXPIRATION => EXTENDED_EXPIRATION,
        _ => requested.min(MAX_EXPIRATION),
    };
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]},
    });
    if let Some((pod_name, pod_uid)) = &pod {
        k8s["pod"] = json!({"name": pod_name, "uid": pod_uid});
    }
    let claims = json!({
        "iss": API_AUDIENCE, "aud": audiences, "sub": super::service_account_user(ns, name),
        "iat": now, "nbf": now, "exp": now + lifetime, "kubernetes.io": k8s,
    });
    let expires = chrono::DateTime::from_timestamp(now + requested.min(MAX_EXPIRATION), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": requested});
    if !bound.is_null() {
        out_spec["boundObjectRef"] = bound.clone();
    }
    let out = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": crate::meta::now()},
        "spec": out_spec,
        "status": {"token": sign(&st.signing_key, &claims), "expirationTimestamp": expires},
    });
    Ok(json_response(StatusCode::CREATED, &out))
}

/// The pod a token is bound to: it must exist (with the UID given, if any).
fn bound_pod(
    inner: &crate::store::Inner,
    ns: &str,
    sa: &str,
    bound: &Value,
) -> ApiResult<(String, String)> {
    let kind = bound["kind"].as_str().unwrap_or_default();
    if kind != "Pod" {
        return Err(invalid(
            sa,
            "spec.boundObjectRef.kind",
            format!("Unsupported value: \"{kind}\": supported values: \"Pod\""),
        ));
    }
    let pod_name = bound["name"].as_str().unwrap_or_default();
    let pod = inner
        .get("/pods", ns, pod_name)
        .ok_or_else(|| ApiError::not_found("", "pods", pod_name))?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
        && want != uid
    {
        return Err(ApiError::conflict(
            "",
            "pods",
            pod_name,
            &format!(
                "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok((pod_name.to_owned(), uid))
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    let reason = if message.starts_with("Unsupported") {
        "FieldValueNotSupported"
    } else {
        "FieldValueInvalid"
    };
    let cause = Cause { reason: reason.into(), message, field: field.into() };
    ApiError::invalid("authentication.k8s.io", "TokenRequest", name, vec![cause])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231 has a 4-byte key; zero-padded to 32 bytes it is the same
        // HMAC key (keys shorter than the block are zero-padded).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_token_verifies_only_unaltered_and_unexpired() {
        let key = [7u8; 32];
        let token = sign(&key, &json!({"sub": "x", "exp": 200, "nbf": 100}));
        assert_eq!(verify(&key, &token, 150).unwrap()["sub"], "x");
        assert!(verify(&key, &token, 200).is_none(), "expired");
        assert!(verify(&key, &token, 99).is_none(), "not yet valid");
        assert!(verify(&[8u8; 32], &token, 150).is_none(), "another key");
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","exp":200}"#);
        assert!(verify(&key, &format!("{head}.{forged}.{sig}"), 150).is_none(), "forged claims");
    }
}
