//! Kubernetes merge semantics over JSON values, in one place: how each list field merges
//! ([`lists`]: the merge keys of strategic merge patch, the `listType` of server-side apply)
//! and the strategic merge itself ([`strategic`]).
//!
//! The development API server uses both for `PATCH` and server-side apply; the operator uses
//! the strategic merge to lay a BlazeEngine's `spec.podTemplate` over the worker pod it builds.
//! The table is generated from the Go types of the built-in kinds ([`builtin`]). One table
//! and one merge keep the two from disagreeing about what, say, a volume override
//! does.
//!
//! ```
//! use blaze_merge::lists::Node;
//! use serde_json::json;
//!
//! let pod_type = Node::builtin("v1", "Pod");
//! let mut pod = json!({"spec": {"containers": [{"name": "w", "image": "a"}]}});
//! let patch = json!({"spec": {"containers": [{"name": "w", "args": ["x"]}]}});
//! blaze_merge::merge(&mut pod, &patch, pod_type);
//! assert_eq!(pod, json!({"spec": {"containers": [{"name": "w", "image": "a", "args": ["x"]}]}}));
//! ```

pub mod builtin;
pub mod lists;
pub mod strategic;

pub use strategic::merge;
