//! The object store: one map per resource, a global monotonic resourceVersion, a bounded event
//! history for watches and for lists at an older version, and an optional on-disk copy.
//!
//! A write is all or nothing: [`Store::write`] saves every change a request made before any
//! watcher or reader sees it, and when saving fails it puts the objects, the version and the
//! history back as they were, so the store, the disk and every watcher agree.
//!
//! Older versions are not kept as copies: each event carries the object before the change, so
//! the objects of a resource at an older version are the newest ones with the later events
//! undone ([`Inner::at_version`]). A paged list reads every page from its first page's version
//! that way, for as long as the history reaches back to it and for at most
//! [`SNAPSHOT_RETENTION`] after the version was superseded (as an etcd compaction would end it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::persist::Persist;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// Storage key (`group/plural`).
    pub key: String,
    /// Namespace, empty for cluster-scoped objects.
    pub ns: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before removal for deletions, with the new version).
    pub object: Arc<Value>,
    /// The object before a modification or deletion (`None` for a creation): selector
    /// watches turn a change in or out of the selection into ADDED or DELETED with it, lists
    /// at an older version and a failed write's rollback undo the change with it.
    pub previous: Option<Arc<Value>>,
    /// When the change was made.
    pub at: Instant,
    /// The watch-event line, encoded once for every watcher.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

/// Objects of one resource, by (namespace, name).
pub type Objects = BTreeMap<(String, String), Arc<Value>>;

/// How long a version stays readable after a newer one replaced it: kube-apiserver compacts
/// etcd every 5 minutes, so a continue token lives about that long on a real cluster too.
pub const SNAPSHOT_RETENTION: Duration = Duration::from_secs(5 * 60);

/// Store state; mutate it only inside [`Store::write`].
#[derive(Debug)]
pub struct Inner {
    rv: u64,
    objects: HashMap<String, Objects>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Watches from a version older than this one get `410 Gone`.
    compacted: u64,
    pending: Vec<Arc<Event>>,
}

impl Inner {
    /// The newest resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest version a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Objects of one resource.
    pub fn objects(&self, key: &str) -> Option<&Objects> {
        self.objects.get(key)
    }

    /// Every resource's objects.
    pub fn all_objects(&self) -> impl Iterator<Item = (&String, &Objects)> {
        self.objects.iter()
    }

    /// One object.
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(key)?.get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    /// Events after `rv` still in the history.
    pub fn events_since(&self, rv: u64) -> Vec<Arc<Event>> {
        self.history_after(rv).cloned().collect()
    }

    fn history_after(&self, rv: u64) -> impl Iterator<Item = &Arc<Event>> {
        let start = self.history.partition_point(|e| e.rv <= rv);
        self.history.iter().skip(start)
    }

    /// Whether the objects at version `rv` can still be read ([`Inner::at_version`]): the
    /// history holds every later change, and the first of them is younger than
    /// [`SNAPSHOT_RETENTION`] at `now`.
    pub fn readable_at(&self, rv: u64, now: Instant) -> bool {
        if rv > self.rv || rv < self.compacted {
            return false;
        }
        self.history_after(rv)
            .next()
            .is_none_or(|e| now.saturating_duration_since(e.at) <= SNAPSHOT_RETENTION)
    }

    /// How the objects of `key` at version `rv` differ from the newest ones: for each object
    /// changed since, what it was at `rv` (`None`: it did not exist). Empty when nothing of
    /// `key` changed. Only meaningful where [`Inner::readable_at`] holds.
    pub fn at_version(&self, key: &str, rv: u64) -> BTreeMap<(String, String), Option<Arc<Value>>> {
        let mut then = BTreeMap::new();
        for e in self.history_after(rv).filter(|e| e.key == key) {
            let name = e.object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            // The first change after `rv` tells what the object was at `rv`.
            then.entry((e.ns.clone(), name)).or_insert_with(|| e.previous.clone());
        }
        then
    }

    /// Stores `obj` (its `metadata.resourceVersion` is set here) and records the event.
    pub fn put(&mut self, key: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let (ns, name) = ns_name(&obj);
        let obj = Arc::new(obj);
        let map = self.objects.entry(key.to_owned()).or_default();
        let previous = map.insert((ns.clone(), name), obj.clone());
        let kind = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.record(key, ns, kind, obj.clone(), previous);
        obj
    }

    /// Removes an object, recording a DELETED event carrying a new version.
    pub fn remove(&mut self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(key)?.remove(&(ns.to_owned(), name.to_owned()))?;
        self.rv += 1;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let last = Arc::new(last);
        self.record(key, ns.to_owned(), EventType::Deleted, last.clone(), Some(old));
        Some(last)
    }

    fn record(
        &mut self,
        key: &str,
        ns: String,
        kind: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            key: key.to_owned(),
            ns,
            kind,
            object,
            previous,
            at: Instant::now(),
            encoded: Default::default(),
        });
        self.history.push_back(event.clone());
        self.pending.push(event);
    }

    /// Drops the oldest events beyond the history's capacity.
    fn trim_history(&mut self) {
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Undoes `events` (the newest writes, oldest first), made from version `before`: objects,
    /// version and history are as they were before them.
    fn roll_back(&mut self, events: &[Arc<Event>], before: u64) {
        for e in events.iter().rev() {
            let name = e.object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let map = self.objects.entry(e.key.clone()).or_default();
            match &e.previous {
                Some(prev) => map.insert((e.ns.clone(), name), prev.clone()),
                None => map.remove(&(e.ns.clone(), name)),
            };
            if self.history.back().is_some_and(|h| Arc::ptr_eq(h, e)) {
                self.history.pop_back();
            }
        }
        self.rv = before;
    }

    /// Drops the whole event history: every watch from an older version gets `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }
}

/// `(namespace, name)` of an object.
pub fn ns_name(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&m["namespace"]), s(&m["name"]))
}

/// Events after a version, and a receiver of everything later.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// The store, shared by the HTTP handlers, watchers and in-process controllers.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    persist: Option<Persist>,
}

/// How many events a slow watcher may fall behind before its watch ends (it re-watches, or
/// re-lists after `410 Gone`).
const WATCH_BUFFER: usize = 65_536;

impl Store {
    /// An empty store, or the one saved in `persist`.
    pub fn new(history_cap: usize, persist: Option<Persist>) -> crate::Result<Self> {
        let mut objects: HashMap<String, Objects> = HashMap::new();
        let mut rv = 0;
        if let Some(p) = &persist {
            let (loaded, saved_rv) = p.load()?;
            rv = saved_rv;
            for (key, obj) in loaded {
                rv = rv.max(crate::meta::resource_version(&obj));
                let (ns, name) = ns_name(&obj);
                objects.entry(key).or_default().insert((ns, name), Arc::new(obj));
            }
        }
        let inner = Inner {
            rv,
            objects,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted: rv,
            pending: Vec::new(),
        };
        let (tx, _) = broadcast::channel(WATCH_BUFFER);
        Ok(Self { inner: RwLock::new(inner), tx, persist })
    }

    /// A consistent read view.
    pub fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read()
    }

    /// Runs `f` with exclusive access, then persists and publishes its events in order. When
    /// an event cannot be saved, every change `f` made is undone (in memory, and on disk as
    /// far as the disk allows) before anyone else can read the store, nothing is published,
    /// and the error is returned.
    pub fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> crate::Result<T> {
        let mut g = self.inner.write();
        let before = g.rv;
        let out = f(&mut g);
        let events = std::mem::take(&mut g.pending);
        if let Some(p) = &self.persist {
            for (i, e) in events.iter().enumerate() {
                if let Err(err) = p.record(e, e.rv) {
                    tracing::error!(error = %err, "saving a write failed; undoing it");
                    for saved in events[..i].iter().rev() {
                        if let Err(undo) = p.undo(saved) {
                            tracing::error!(error = %undo, "undoing a saved change failed");
                        }
                    }
                    g.roll_back(&events, before);
                    return Err(err);
                }
            }
        }
        g.trim_history();
        for e in events {
            // No receivers is fine: nobody watches yet.
            let _ = self.tx.send(e);
        }
        Ok(out)
    }

    /// Events after `rv` and a receiver for everything later, with no gap between them.
    /// `None` when `rv` has left the history.
    pub fn subscribe(&self, rv: u64) -> Option<Subscription> {
        let g = self.inner.read();
        if rv < g.compacted {
            return None;
        }
        Some((g.events_since(rv), self.tx.subscribe()))
    }

    /// A receiver of every future event (for in-process controllers such as the collector).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests;
