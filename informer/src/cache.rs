//! One kind's cache: every stored object of the kind as its slim projection ([`Facts`]) and the
//! stored record it came from, with indexes and change handlers.
//!
//! The record's bytes are the state machine's own (`Bytes` share them), so the cache adds one
//! projection per object, not a copy of it; a consumer that needs the whole object decodes it
//! from the record ([`Item::object`]) when it acts on it.
//!
//! Invariants: the cache changes only in log order (the feeding task is its one writer);
//! indexes always agree with the items; a handler sees every change — after a re-list too,
//! which is diffed against what the cache held, so a consumer never misses one silently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use keelson_raft::command::Record;
use serde_json::Value;

use crate::UNDECODABLE;

/// What a cache keeps of each object of its kind, computed once per change.
pub trait Facts: Sized + Send + Sync + 'static {
    /// The resource (`pods`), as in storage keys.
    const PLURAL: &'static str;
    /// The indexes this kind keeps (none by default).
    const INDEXES: &'static [&'static str] = &[];
    /// The projection of a decoded object.
    fn from_object(obj: &Value) -> Self;
    /// The values of index `index` for this object (none: not in that index).
    fn index_values(&self, _index: &str) -> Vec<String> {
        Vec::new()
    }
}

/// One cached object.
pub struct Item<T> {
    /// Its storage key (`/registry/pods/default/web-1`).
    pub key: String,
    /// The stored record: its bytes (shared with the state machine) and resource versions.
    pub record: Record,
    pub facts: T,
}

impl<T> Item<T> {
    /// The object's resource version.
    pub fn rv(&self) -> u64 {
        self.record.mod_rv
    }

    /// The whole object, decoded from its record, with its resource version set.
    pub fn object(&self) -> Result<Value, String> {
        keelson_model::stored::decode(&self.record.value, self.record.mod_rv)
            .map_err(|e| format!("stored object {} undecodable: {e}", self.key))
    }
}

/// Called with the item before and after each change (`None`: absent), after the cache
/// changed, on the feeding thread: it must be quick and must not block.
pub type Handler<T> = Box<dyn Fn(Option<&Arc<Item<T>>>, Option<&Arc<Item<T>>>) + Send + Sync>;

struct Inner<T> {
    items: BTreeMap<String, Arc<Item<T>>>,
    /// index name → value → keys.
    indexes: HashMap<&'static str, HashMap<String, BTreeSet<Arc<str>>>>,
}

/// A cache of one kind.
pub struct Cache<T: Facts> {
    inner: RwLock<Inner<T>>,
    handlers: Mutex<Vec<(u64, Arc<Handler<T>>)>>,
    next_handler: std::sync::atomic::AtomicU64,
}

impl<T: Facts> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            inner: RwLock::new(Inner {
                items: BTreeMap::new(),
                indexes: T::INDEXES.iter().map(|i| (*i, HashMap::new())).collect(),
            }),
            handlers: Mutex::new(Vec::new()),
            next_handler: Default::default(),
        }
    }
}

/// Removes its handler when dropped.
pub struct HandlerGuard<T: Facts> {
    cache: Arc<Cache<T>>,
    id: u64,
}

impl<T: Facts> Drop for HandlerGuard<T> {
    fn drop(&mut self) {
        self.cache
            .handlers
            .lock()
            .expect("handlers lock")
            .retain(|(id, _)| *id != self.id);
    }
}

impl<T: Facts> Cache<T> {
    /// The item under storage key `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Item<T>>> {
        self.read().items.get(key).cloned()
    }

    /// Every item, in key order.
    pub fn list(&self) -> Vec<Arc<Item<T>>> {
        self.read().items.values().cloned().collect()
    }

    /// The items whose index `index` has value `value`, in key order.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<Item<T>>> {
        let inner = self.read();
        let Some(keys) = inner.indexes.get(index).and_then(|i| i.get(value)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| inner.items.get(&**k).cloned())
            .collect()
    }

    /// The keys whose index `index` has value `value`.
    pub fn keys_by_index(&self, index: &str, value: &str) -> Vec<String> {
        self.read()
            .indexes
            .get(index)
            .and_then(|i| i.get(value))
            .map(|keys| keys.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// How many items index `index` has under `value`.
    pub fn count_by_index(&self, index: &str, value: &str) -> usize {
        self.read()
            .indexes
            .get(index)
            .and_then(|i| i.get(value))
            .map_or(0, |keys| keys.len())
    }

    /// Calls `handler` on the item before and the item after every later change (each one
    /// that exists), until the guard is dropped: for consumers that queue what either concerns.
    pub fn on_each_side(
        self: &Arc<Self>,
        handler: impl Fn(&Arc<Item<T>>) + Send + Sync + 'static,
    ) -> HandlerGuard<T> {
        self.on_change(move |old, new| [old, new].into_iter().flatten().for_each(&handler))
    }

    /// Calls `handler` on every later change, until the guard is dropped. A consumer that
    /// registers first and lists after misses nothing (it may see a change twice).
    pub fn on_change(
        self: &Arc<Self>,
        handler: impl Fn(Option<&Arc<Item<T>>>, Option<&Arc<Item<T>>>) + Send + Sync + 'static,
    ) -> HandlerGuard<T> {
        let id = self
            .next_handler
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handlers
            .lock()
            .expect("handlers lock")
            .push((id, Arc::new(Box::new(handler))));
        HandlerGuard {
            cache: self.clone(),
            id,
        }
    }

    /// Stores `record` under `key` (a create or update), or removes `key` (`None`). Only the
    /// cache's one feeder calls it, in the order of the changes.
    pub fn apply(&self, key: &str, record: Option<Record>) {
        let new = record.and_then(|r| decode(key, r));
        let old = {
            let mut inner = self.write();
            let old = inner.remove(key);
            if let Some(item) = &new {
                inner.insert(item.clone());
            }
            old
        };
        self.notify(old.as_ref(), new.as_ref());
    }

    /// Replaces every item with `records` (a re-list), telling handlers what differs. Only the
    /// cache's one feeder calls it.
    pub fn replace(&self, records: Vec<(String, Record)>) {
        let mut changes = Vec::new();
        {
            let mut inner = self.write();
            let mut fresh: BTreeMap<String, Record> = records.into_iter().collect();
            let gone: Vec<String> = inner
                .items
                .keys()
                .filter(|k| !fresh.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                changes.push((inner.remove(&key), None));
            }
            for (key, record) in std::mem::take(&mut fresh) {
                if inner
                    .items
                    .get(&key)
                    .is_some_and(|i| i.record.mod_rv == record.mod_rv)
                {
                    continue;
                }
                let old = inner.remove(&key);
                let new = decode(&key, record);
                if let Some(item) = &new {
                    inner.insert(item.clone());
                }
                changes.push((old, new));
            }
        }
        for (old, new) in changes {
            self.notify(old.as_ref(), new.as_ref());
        }
    }

    fn notify(&self, old: Option<&Arc<Item<T>>>, new: Option<&Arc<Item<T>>>) {
        if old.is_none() && new.is_none() {
            return;
        }
        let handlers: Vec<Arc<Handler<T>>> = self
            .handlers
            .lock()
            .expect("handlers lock")
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in handlers {
            h(old, new);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().expect("cache lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().expect("cache lock")
    }
}

impl<T: Facts> Inner<T> {
    fn insert(&mut self, item: Arc<Item<T>>) {
        let key: Arc<str> = Arc::from(item.key.as_str());
        for index in T::INDEXES {
            let map = self.indexes.get_mut(index).expect("declared index");
            for value in item.facts.index_values(index) {
                map.entry(value).or_default().insert(key.clone());
            }
        }
        self.items.insert(item.key.clone(), item);
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Item<T>>> {
        let item = self.items.remove(key)?;
        for index in T::INDEXES {
            let map = self.indexes.get_mut(index).expect("declared index");
            for value in item.facts.index_values(index) {
                if let Some(keys) = map.get_mut(&value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        map.remove(&value);
                    }
                }
            }
        }
        Some(item)
    }
}

/// The item of a stored record; one that does not decode is counted and left out, as lists
/// leave it out.
fn decode<T: Facts>(key: &str, record: Record) -> Option<Arc<Item<T>>> {
    match keelson_model::stored::decode(&record.value, record.mod_rv) {
        Ok(obj) => Some(Arc::new(Item {
            key: key.to_string(),
            facts: T::from_object(&obj),
            record,
        })),
        Err(e) => {
            UNDECODABLE.inc();
            tracing::warn!(key, "informer: skipping a stored object: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    /// A kind for the test: a label `group`, indexed.
    struct Thing {
        group: String,
    }

    impl Facts for Thing {
        const PLURAL: &'static str = "things";
        const INDEXES: &'static [&'static str] = &["group"];
        fn from_object(obj: &Value) -> Self {
            Thing {
                group: obj
                    .pointer("/metadata/labels/group")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }
        }
        fn index_values(&self, index: &str) -> Vec<String> {
            match index {
                "group" if !self.group.is_empty() => vec![self.group.clone()],
                _ => Vec::new(),
            }
        }
    }

    fn record(group: &str, rv: u64) -> Record {
        let obj = json!({"metadata": {"name": "x", "labels": {"group": group}}});
        Record {
            value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
            create_rv: 0,
            mod_rv: rv,
        }
    }

    /// Random changes and re-lists (of the model's state, as a re-list after a lagged or reset
    /// feed gives): the cache equals the model, its index equals one recomputed from it, and a
    /// consumer that only follows the handlers holds the same state — none is skipped.
    #[test]
    fn the_cache_and_its_consumers_follow_a_model_through_changes_and_relists() {
        for seed in 0..50u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let cache: Arc<Cache<Thing>> = Arc::new(Cache::default());
            let mirror: Arc<Mutex<BTreeMap<String, (String, u64)>>> = Default::default();
            let _guard = cache.on_change({
                let mirror = mirror.clone();
                move |old, new| {
                    let mut m = mirror.lock().unwrap();
                    match (old, new) {
                        (_, Some(n)) => {
                            m.insert(n.key.clone(), (n.facts.group.clone(), n.rv()));
                        }
                        (Some(o), None) => {
                            m.remove(&o.key);
                        }
                        (None, None) => unreachable!("handlers see changes only"),
                    }
                }
            });
            let mut model: BTreeMap<String, (String, u64)> = BTreeMap::new();
            let mut rv = 0;
            for _ in 0..300 {
                rv += 1;
                let key = format!("/registry/things/k{}", rng.gen_range(0..12));
                let group = ["a", "b", "c", ""][rng.gen_range(0..4)].to_string();
                match rng.gen_range(0..10) {
                    0..=5 => {
                        cache.apply(&key, Some(record(&group, rv)));
                        model.insert(key, (group, rv));
                    }
                    6..=7 => {
                        cache.apply(&key, None);
                        model.remove(&key);
                    }
                    _ => {
                        // A re-list at the model's state, after some changes the feed lost.
                        for _ in 0..rng.gen_range(0..4) {
                            rv += 1;
                            let k = format!("/registry/things/k{}", rng.gen_range(0..12));
                            if rng.gen_bool(0.3) {
                                model.remove(&k);
                            } else {
                                model.insert(k, ("b".into(), rv));
                            }
                        }
                        let list = model
                            .iter()
                            .map(|(k, (g, v))| (k.clone(), record(g, *v)))
                            .collect();
                        cache.replace(list);
                    }
                }
                let held: BTreeMap<String, (String, u64)> = cache
                    .list()
                    .iter()
                    .map(|i| (i.key.clone(), (i.facts.group.clone(), i.rv())))
                    .collect();
                assert_eq!(held, model, "seed {seed}");
                assert_eq!(*mirror.lock().unwrap(), model, "seed {seed}: a consumer");
                for g in ["a", "b", "c"] {
                    let indexed: Vec<String> = cache.keys_by_index("group", g);
                    let want: Vec<String> = model
                        .iter()
                        .filter(|(_, (mg, _))| mg == g)
                        .map(|(k, _)| k.clone())
                        .collect();
                    assert_eq!(indexed, want, "seed {seed}: index {g}");
                }
                assert!(cache.keys_by_index("group", "").is_empty());
            }
        }
    }

    #[test]
    fn a_dropped_guard_stops_its_handler() {
        let cache: Arc<Cache<Thing>> = Arc::new(Cache::default());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let guard = cache.on_change({
            let calls = calls.clone();
            move |_, _| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        cache.apply("/registry/things/a", Some(record("a", 1)));
        drop(guard);
        cache.apply("/registry/things/a", Some(record("b", 2)));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
