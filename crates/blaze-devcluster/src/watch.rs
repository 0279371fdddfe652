//! Watch: the events after a resourceVersion (or the current state, then changes), filtered
//! by namespace and selectors, with bookmarks, `timeoutSeconds`, and an `ERROR` event carrying
//! `410 Gone` when the version has left the history ("Efficient detection of changes" in the
//! API concepts).

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{Ctx, Target, stream_body};
use crate::error::{ApiError, ApiResult};
use crate::handlers::versioned;
use crate::resources::ResourceInfo;
use crate::selectors::{self, matches};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::State;
use crate::store::{Event, EventType};

/// How often an idle watch that allows bookmarks gets one: kube-runtime then resumes from a
/// recent version instead of re-listing after a reconnect.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

struct Filter {
    key: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    info: Arc<ResourceInfo>,
    table: bool,
}

impl Filter {
    fn selects(&self, obj: &Value) -> bool {
        matches(obj, &self.labels, &self.fields)
    }

    /// The event this watcher sees, if any: a modification that moves an object into the
    /// selection is ADDED, one that moves it out is DELETED, as the real watch cache does.
    fn view(&self, e: &Event) -> Option<EventType> {
        if e.key != self.key || self.ns.as_ref().is_some_and(|n| *n != e.ns) {
            return None;
        }
        let now = self.selects(&e.object);
        match (e.kind, &e.previous) {
            (EventType::Modified, Some(prev)) => match (self.selects(prev), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
            (kind, _) => now.then_some(kind),
        }
    }

    fn encode_obj(&self, kind: &str, obj: &Value) -> bytes::Bytes {
        let object = if self.table {
            crate::table::table(
                &self.info,
                &[Arc::new(obj.clone())],
                obj["metadata"]["resourceVersion"].as_str().unwrap_or_default(),
                None,
            )
        } else {
            versioned(&self.info, obj)
        };
        line(&json!({"type": kind, "object": object}))
    }

    fn encode(&self, e: &Event, kind: EventType) -> bytes::Bytes {
        let plain = !self.table
            && (!self.info.custom
                || e.object["apiVersion"].as_str() == Some(self.info.api_version().as_str()));
        if plain && kind == e.kind {
            return e
                .encoded
                .get_or_init(|| line(&json!({"type": e.kind.as_str(), "object": &*e.object})))
                .clone();
        }
        self.encode_obj(kind.as_str(), &e.object)
    }
}

fn line(v: &Value) -> bytes::Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    b.into()
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> bytes::Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        &json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}}),
    )
}

/// Starts a watch and streams it.
pub async fn watch(st: Arc<State>, ctx: &Ctx, t: Target) -> ApiResult<Response> {
    let (labels, fields) = selectors::from_query(&ctx.query, &t.info)?;
    let filter = Filter {
        key: t.info.storage_key(),
        ns: t.ns.clone(),
        labels,
        fields,
        info: t.info.clone(),
        table: ctx.wants_table(),
    };
    let rv_param = ctx.query.get("resourceVersion").unwrap_or_default();
    let initial = ctx.query.flag("sendInitialEvents");
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let timeout =
        ctx.query.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1800);
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(256);
    let mut first: Vec<bytes::Bytes> = Vec::new();
    let sub = if rv_param.is_empty() || rv_param == "0" || initial {
        // Start from the current state: synthetic ADDED events, then changes.
        let g = st.store.read();
        let rv = g.rv();
        if let Some(map) = g.objects(&filter.key) {
            for ((ns, _), o) in map {
                if filter.ns.as_ref().is_none_or(|n| n == ns)
                    && matches(o, &filter.labels, &filter.fields)
                {
                    first.push(filter.encode_obj(EventType::Added.as_str(), o));
                }
            }
        }
        drop(g);
        if initial && bookmarks {
            first.push(bookmark(&filter.info, rv, true));
        }
        st.store.subscribe(rv).map(|(evs, rx)| (rv, evs, rx))
    } else {
        let rv: u64 = rv_param.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: \"{rv_param}\""))
        })?;
        st.store.subscribe(rv).map(|(evs, rx)| (rv, evs, rx))
    };
    match sub {
        None => {
            let gone = ApiError::gone(format!(
                "too old resource version: {rv_param} ({})",
                st.store.read().compacted()
            ));
            first.push(line(&json!({"type": "ERROR", "object": gone.to_status()})));
            for b in first {
                let _ = tx.try_send(b);
            }
        }
        Some((rv, backlog, events)) => {
            tokio::spawn(pump(
                st.clone(),
                filter,
                first,
                rv,
                backlog,
                events,
                tx,
                bookmarks,
                Duration::from_secs(timeout),
            ));
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(stream_body(rx))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    st: Arc<State>,
    filter: Filter,
    first: Vec<bytes::Bytes>,
    mut last_rv: u64,
    backlog: Vec<Arc<Event>>,
    mut events: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<bytes::Bytes>,
    bookmarks: bool,
    timeout: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut shutdown = st.shutdown.clone();
    let mut expire = st.expire_watches.subscribe();
    for b in first {
        if tx.send(b).await.is_err() {
            return;
        }
    }
    for e in backlog {
        last_rv = e.rv;
        if let Some(kind) = filter.view(&e)
            && tx.send(filter.encode(&e, kind)).await.is_err()
        {
            return;
        }
    }
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = crate::server::stopped(&mut shutdown) => return,
            _ = expire.changed() => {
                let gone = ApiError::gone(format!("too old resource version: {last_rv}"));
                let _ = tx.send(line(&json!({"type": "ERROR", "object": gone.to_status()}))).await;
                return;
            }
            _ = tick.tick(), if bookmarks => {
                if tx.send(bookmark(&filter.info, last_rv, false)).await.is_err() {
                    return;
                }
            }
            got = events.recv() => match got {
                Ok(e) => {
                    if e.rv <= last_rv {
                        continue;
                    }
                    last_rv = e.rv;
                    if let Some(kind) = filter.view(&e)
                        && tx.send(filter.encode(&e, kind)).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // This watcher fell too far behind: end the watch with 410 so the client
                    // re-lists, as the real server does when its watch cache overflows.
                    let gone = ApiError::gone(format!("too old resource version: {last_rv}"));
                    let _ = tx.send(line(&json!({"type": "ERROR", "object": gone.to_status()}))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
