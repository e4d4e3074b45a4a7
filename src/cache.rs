//! The operator's cache of `CleanmailUser`s and `CleanmailGroup`s: one watch per kind, one copy of
//! each object in memory, read by both sides of the operator.
//!
//! - **The SCIM read model**: objects indexed per tenant namespace by name (the SCIM id), by the
//!   lower-cased unique attribute (`userName`, `displayName`) and by `externalId`. This replica's
//!   own writes are recorded at once, so a read right after a write sees it. Objects being deleted
//!   are not SCIM-visible: Entra must get 404 after DELETE even while the controller is still
//!   cleaning up the mailbox behind a finalizer.
//! - **The controllers**: a `kube` [`Store`] holding every object, those being deleted included,
//!   and a stream of the objects that changed ([`ResourceStore::changes`]). The indexes hold the
//!   very objects that store holds, so a user costs memory once, not once per reader.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, channel::mpsc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::{
    ResourceExt,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use smallvec::SmallVec;
use tokio::sync::watch;

use crate::{
    crd::{CleanmailGroup, CleanmailUser},
    scope::Partition,
};

/// A resource the cache can index.
pub trait Indexed: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// The attribute unique per tenant, lower-cased (RFC 7643: `caseExact` false).
    fn unique_key(&self) -> String;
    fn external_id(&self) -> Option<&str>;
    /// The generation the controller last reported on (`status.observedGeneration`).
    fn observed_generation(&self) -> Option<i64>;
}

impl Indexed for CleanmailUser {
    fn unique_key(&self) -> String {
        self.spec.user_name.to_lowercase()
    }
    fn external_id(&self) -> Option<&str> {
        self.spec.external_id.as_deref()
    }
    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }
}

impl Indexed for CleanmailGroup {
    fn unique_key(&self) -> String {
        self.spec.display_name.to_lowercase()
    }
    fn external_id(&self) -> Option<&str> {
        self.spec.external_id.as_deref()
    }
    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }
}

pub type UserStore = ResourceStore<CleanmailUser>;
pub type GroupStore = ResourceStore<CleanmailGroup>;

/// How long a deletion is remembered so a late watch event cannot bring the object back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// An object's name, shared by the name map and the indexes.
type Name = Arc<str>;

/// The names an index key leads to, sorted: nearly always one, which is kept inline, as a heap
/// vector (or a set's tree node) per key would cost more than the key itself at 100,000 users.
#[derive(Default)]
struct Names(SmallVec<[Name; 1]>);

impl Names {
    fn insert(&mut self, name: Name) {
        if let Err(at) = self.0.binary_search(&name) {
            self.0.insert(at, name);
        }
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|n| n.as_ref() != name);
    }
}

struct Namespace<K> {
    by_name: BTreeMap<Name, Arc<K>>,
    by_unique_key: HashMap<Box<str>, Names>,
    by_external_id: HashMap<Box<str>, Names>,
    /// Deleted names with the version they were deleted at, and when, oldest first, so that
    /// expired ones are dropped without scanning them all on every deletion.
    tombstones: HashMap<String, (u64, Instant)>,
    burials: VecDeque<(Instant, String)>,
}

impl<K> Default for Namespace<K> {
    fn default() -> Self {
        Namespace {
            by_name: BTreeMap::new(),
            by_unique_key: HashMap::new(),
            by_external_id: HashMap::new(),
            tombstones: HashMap::new(),
            burials: VecDeque::new(),
        }
    }
}

impl<K: Indexed> Namespace<K> {
    fn insert(&mut self, object: Arc<K>) {
        let name: Name = object.name_any().into();
        self.remove(&name);
        self.by_unique_key.entry(object.unique_key().into()).or_default().insert(name.clone());
        if let Some(external_id) = object.external_id() {
            self.by_external_id.entry(external_id.into()).or_default().insert(name.clone());
        }
        self.by_name.insert(name, object);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<K>> {
        let old = self.by_name.remove(name)?;
        remove_from(&mut self.by_unique_key, &old.unique_key(), name);
        if let Some(external_id) = old.external_id() {
            remove_from(&mut self.by_external_id, external_id, name);
        }
        Some(old)
    }

    fn bury(&mut self, name: &str, version: Option<u64>) {
        let now = Instant::now();
        while let Some((at, _)) = self.burials.front()
            && now.duration_since(*at) >= TOMBSTONE_TTL
        {
            let Some((at, expired)) = self.burials.pop_front() else { break };
            // Only if not buried again since.
            if self.tombstones.get(&expired).is_some_and(|(_, buried)| *buried == at) {
                self.tombstones.remove(&expired);
            }
        }
        if let Some(version) = version {
            self.tombstones.insert(name.to_string(), (version, now));
            self.burials.push_back((now, name.to_string()));
        }
    }
}

fn remove_from(index: &mut HashMap<Box<str>, Names>, key: &str, name: &str) {
    if let Some(names) = index.get_mut(key) {
        names.remove(name);
        if names.0.is_empty() {
            index.remove(key);
        }
    }
}

/// Whether `held`, the version of `object` the cache holds, is newer, or `ns` remembers the
/// object deleted at a newer version.
fn is_stale<K: Indexed>(object: &K, held: Option<&K>, ns: Option<&Namespace<K>>) -> bool {
    let Some(version) = resource_version(object) else { return false };
    let known = held.and_then(resource_version);
    let buried = ns.and_then(|ns| ns.tombstones.get(&object.name_any())).map(|(v, _)| *v);
    known.into_iter().chain(buried).any(|newest| version < newest)
}

/// Resource versions are opaque to clients, but the API server hands them out from one increasing
/// counter; comparing them is only used to drop events older than what this replica already saw.
fn resource_version<K: kube::Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// What a partition's (re)list has brought so far, indexed as it arrives: holding the listed
/// objects whole until the list ends would double the replica's peak of memory.
struct Relist<K: Indexed> {
    /// The SCIM indexes of the listed objects.
    fresh: HashMap<String, Namespace<K>>,
    listed: HashSet<ObjectRef<K>>,
}

impl<K: Indexed> Default for Relist<K> {
    fn default() -> Self {
        Relist { fresh: HashMap::new(), listed: HashSet::new() }
    }
}

/// The object the cache holds after a write or an event, and whether it is a version the
/// controllers have not been told of: this replica's own write and the watch event echoing it
/// trigger one reconcile, not two (the second, running on the version before the reconcile's own
/// status write, would repeat its Event and status write).
struct Stored<K> {
    object: Arc<K>,
    new: bool,
}

/// Shared, cheaply cloneable handle on the cache of one resource kind.
pub struct ResourceStore<K: Indexed> {
    inner: Arc<Inner<K>>,
}

struct Inner<K: Indexed> {
    /// The SCIM indexes, per namespace.
    namespaces: RwLock<HashMap<String, Namespace<K>>>,
    /// Every object, as the controllers read it. Locked first whenever both are changed, so that
    /// a subscriber's snapshot and the changes after it neither overlap nor leave a gap.
    writer: Mutex<Writer<K>>,
    reader: Store<K>,
    /// The controllers following changes, with the partition each covers.
    subscribers: Mutex<Vec<(Partition, mpsc::UnboundedSender<Arc<K>>)>>,
    ready: watch::Sender<bool>,
}

impl<K: Indexed> Clone for ResourceStore<K> {
    fn clone(&self) -> Self {
        ResourceStore { inner: self.inner.clone() }
    }
}

/// `object` without what no reader of the cache uses, which is most of its size in memory:
/// `kubectl apply`'s copy of the whole object in an annotation, the labels, and most of
/// `managedFields`. The only reader of labels is SCIM's DELETE, which reads the object fresh.
/// Readers need the field sets of server-side applies to the object itself, with their managers
/// (the fields SCIM must not change), and the newest time anything but a status writer touched
/// the object (`meta.lastModified`). So applies to the object are kept without their API version
/// and field set type, every other writer of the object is folded into one entry holding only
/// that newest time, and status writers are dropped. The folded entry is left out when that time
/// is the creation's, which `meta.lastModified` falls back to: most users are never changed.
fn lean<K: Indexed>(mut object: K) -> K {
    crate::scope::drop_last_applied(object.meta_mut());
    object.meta_mut().labels = None;
    let Some(entries) = object.meta_mut().managed_fields.take() else { return object };
    let mut kept = Vec::new();
    let mut last_update = None;
    for entry in entries.into_iter().filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty()) {
        if entry.operation.as_deref() == Some("Apply") {
            kept.push(ManagedFieldsEntry { api_version: None, fields_type: None, ..entry });
        } else {
            last_update = last_update.max(entry.time);
        }
    }
    if last_update > object.meta().creation_timestamp {
        kept.push(ManagedFieldsEntry { time: last_update, ..Default::default() });
    }
    object.meta_mut().managed_fields = (!kept.is_empty()).then_some(kept);
    object
}

impl<K: Indexed> Default for ResourceStore<K> {
    fn default() -> Self {
        let mut writer = Writer::default();
        // The controllers' store reports itself ready once it has seen a list end; this cache
        // lists per partition itself and is fed object by object, so it says so from the start.
        // The controllers wait for the cache's own readiness instead.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let reader = writer.as_reader();
        ResourceStore {
            inner: Arc::new(Inner {
                namespaces: RwLock::default(),
                writer: Mutex::new(writer),
                reader,
                subscribers: Mutex::default(),
                ready: watch::channel(false).0,
            }),
        }
    }
}

impl<K: Indexed> ResourceStore<K> {
    /// Records an object this replica wrote or observed; an older version than the one held is ignored.
    pub fn apply(&self, object: K) {
        let mut writer = self.writer();
        if let Some(Stored { object, new }) = self.store(&mut writer, lean(object)) {
            Self::index(&mut self.write(), &object);
            if new {
                self.notify(&object);
            }
        }
    }

    /// Records that an object is gone.
    pub fn delete(&self, object: &K) {
        let Some(namespace) = object.namespace() else { return };
        let mut writer = self.writer();
        let mut namespaces = self.write();
        let ns = namespaces.entry(namespace).or_default();
        let held = self.inner.reader.get(&ObjectRef::from_obj(object));
        if is_stale(object, held.as_deref(), Some(ns)) {
            return;
        }
        writer.apply_watcher_event(&watcher::Event::Delete(object.clone()));
        ns.remove(&object.name_any());
        ns.bury(&object.name_any(), resource_version(object));
    }

    /// Puts `object` into the controllers' store unless it holds this version or a newer one.
    fn store(&self, writer: &mut Writer<K>, object: K) -> Option<Stored<K>> {
        let namespace = object.namespace()?;
        let key = ObjectRef::from_obj(&object);
        let held = self.inner.reader.get(&key);
        let unchanged = held.as_ref().is_some_and(|h| h.meta().resource_version == object.meta().resource_version);
        if unchanged || is_stale(&object, held.as_deref(), self.read().get(&namespace)) {
            return held.map(|object| Stored { object, new: false });
        }
        writer.apply_watcher_event(&watcher::Event::Apply(object));
        self.inner.reader.get(&key).map(|object| Stored { object, new: true })
    }

    /// Indexes `object` for SCIM in `indexes` (the live ones, or a relist's); an object being
    /// deleted leaves the indexes and is remembered, so that late events cannot bring it back.
    fn index(indexes: &mut HashMap<String, Namespace<K>>, object: &Arc<K>) {
        let Some(namespace) = object.namespace() else { return };
        let name = object.name_any();
        let ns = indexes.entry(namespace).or_default();
        if object.meta().deletion_timestamp.is_some() {
            ns.remove(&name);
            ns.bury(&name, resource_version(object.as_ref()));
        } else {
            ns.tombstones.remove(&name);
            ns.insert(object.clone());
        }
    }

    /// Tells the controllers following `object`'s partition that it changed.
    fn notify(&self, object: &Arc<K>) {
        let mut subscribers = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|(partition, sender)| {
            let covered = partition.is_none() || partition.as_deref() == object.meta().namespace.as_deref();
            !covered || sender.unbounded_send(object.clone()).is_ok()
        });
    }

    /// The objects of `partition` that `now` picks, then every object of it that changes, until
    /// the stream is dropped: what a controller reconciles.
    pub fn changes(
        &self,
        partition: &Partition,
        now: &dyn Fn(&K) -> bool,
    ) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        let (sender, receiver) = mpsc::unbounded();
        let _writer = self.writer();
        for object in self.inner.reader.state() {
            let covered = partition.is_none() || partition.as_deref() == object.meta().namespace.as_deref();
            if covered && now(&object) {
                let _ = sender.unbounded_send(object);
            }
        }
        self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push((partition.clone(), sender));
        receiver
    }

    /// Up to `count` objects of `partition` that come after `after` in (namespace, name) order,
    /// objects being deleted left out: a walk over all of them, a slice at a time, that never
    /// holds more than the slice.
    pub fn slice_after(&self, partition: &Partition, after: Option<&ObjectRef<K>>, count: usize) -> Vec<Arc<K>> {
        let namespaces = self.read();
        let mut names: Vec<&String> =
            namespaces.keys().filter(|ns| partition.as_ref().is_none_or(|p| p == *ns)).collect();
        names.sort();
        let (after_namespace, after_name) = match after {
            Some(after) => (after.namespace.as_deref().unwrap_or_default(), Some(after.name.as_str())),
            None => ("", None),
        };
        let mut slice = Vec::with_capacity(count.min(1024));
        for namespace in names.into_iter().filter(|ns| ns.as_str() >= after_namespace) {
            let from = match after_name.filter(|_| namespace == after_namespace) {
                Some(name) => std::ops::Bound::Excluded(name),
                None => std::ops::Bound::Unbounded,
            };
            let objects = namespaces[namespace].by_name.range::<str, _>((from, std::ops::Bound::Unbounded));
            slice.extend(objects.take(count - slice.len()).map(|(_, object)| object.clone()));
            if slice.len() == count {
                break;
            }
        }
        slice
    }

    /// How many objects `partition` holds, those being deleted left out.
    pub fn count(&self, partition: &Partition) -> usize {
        let namespaces = self.read();
        match partition {
            Some(namespace) => namespaces.get(namespace).map_or(0, |ns| ns.by_name.len()),
            None => namespaces.values().map(|ns| ns.by_name.len()).sum(),
        }
    }

    /// Every object, those being deleted included, by reference: the controllers' view.
    pub fn reader(&self) -> Store<K> {
        self.inner.reader.clone()
    }

    /// Replaces what is known of `partition` after a (re)list; whatever else it held is gone.
    fn reset(&self, partition: &Partition, relist: Relist<K>) {
        let Relist { mut fresh, listed } = relist;
        let mut writer = self.writer();
        let gone = self.inner.reader.state().into_iter().filter(|object| {
            let covered = partition.is_none() || partition.as_deref() == object.meta().namespace.as_deref();
            covered && !listed.contains(&ObjectRef::from_obj(object.as_ref()))
        });
        for object in gone.collect::<Vec<_>>() {
            writer.apply_watcher_event(&watcher::Event::Delete(K::clone(&object)));
        }
        let mut namespaces = self.write();
        match partition {
            None => *namespaces = fresh,
            Some(namespace) => {
                namespaces.insert(namespace.clone(), fresh.remove(namespace).unwrap_or_default());
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace)?.by_name.get(name).cloned()
    }

    /// Objects whose unique attribute equals `key` case-insensitively.
    pub fn by_unique_key(&self, namespace: &str, key: &str) -> Vec<Arc<K>> {
        self.lookup(namespace, |ns| ns.by_unique_key.get(key.to_lowercase().as_str()))
    }

    /// Objects whose `externalId` equals `external_id` exactly.
    pub fn by_external_id(&self, namespace: &str, external_id: &str) -> Vec<Arc<K>> {
        self.lookup(namespace, |ns| ns.by_external_id.get(external_id))
    }

    fn lookup(&self, namespace: &str, index: impl Fn(&Namespace<K>) -> Option<&Names>) -> Vec<Arc<K>> {
        let namespaces = self.read();
        let Some(ns) = namespaces.get(namespace) else { return Vec::new() };
        index(ns).map(|names| names.0.iter().filter_map(|n| ns.by_name.get(n).cloned()).collect()).unwrap_or_default()
    }

    /// Every object of a namespace in id order, for scans and paging.
    pub fn all(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().get(namespace).map(|ns| ns.by_name.values().cloned().collect()).unwrap_or_default()
    }

    /// Up to `count` objects of `namespace` in name order after skipping `skip`, and how many it
    /// holds in all: a page costs its own size, not a copy of the whole namespace.
    pub fn page(&self, namespace: &str, skip: usize, count: usize) -> (Vec<Arc<K>>, usize) {
        let namespaces = self.read();
        let Some(ns) = namespaces.get(namespace) else { return (Vec::new(), 0) };
        (ns.by_name.values().skip(skip).take(count).cloned().collect(), ns.by_name.len())
    }

    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// How many objects have a spec the controller has not reported on yet.
    pub fn backlog(&self) -> usize {
        let behind = |object: &Arc<K>| object.observed_generation() < object.meta().generation;
        self.read().values().map(|ns| ns.by_name.values().filter(|o| behind(o)).count()).sum()
    }

    /// Resolves once the first full list has been loaded.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Feeds the store from the watches of `partitions` until they end; ready once every
    /// partition has been listed.
    pub async fn follow<S>(self, events: S, partitions: usize)
    where
        S: Stream<Item = (Partition, Result<watcher::Event<K>, watcher::Error>)>,
    {
        let mut relists: HashMap<Partition, Relist<K>> = HashMap::new();
        let mut listed = HashSet::new();
        let mut events = std::pin::pin!(events);
        while let Some((partition, event)) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => drop(relists.insert(partition, Default::default())),
                Ok(watcher::Event::InitApply(object)) => {
                    let relist = relists.entry(partition).or_default();
                    relist.listed.insert(ObjectRef::from_obj(&object));
                    let mut writer = self.writer();
                    if let Some(Stored { object, new }) = self.store(&mut writer, lean(object)) {
                        Self::index(&mut relist.fresh, &object);
                        if new {
                            self.notify(&object);
                        }
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let relist = relists.remove(&partition).unwrap_or_default();
                    self.reset(&partition, relist);
                    listed.insert(partition);
                    if listed.len() >= partitions {
                        self.inner.ready.send_replace(true);
                    }
                }
                Ok(watcher::Event::Apply(object)) => self.apply(object),
                Ok(watcher::Event::Delete(object)) => self.delete(&object),
                Err(error) => tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying"),
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Namespace<K>>> {
        self.inner.namespaces.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Namespace<K>>> {
        self.inner.namespaces.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer<K>> {
        self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanmailUserSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};

    #[test]
    fn the_read_model_keeps_applies_to_the_object_and_the_time_of_the_newest_other_write() {
        let at = |second: i64| Some(Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("time")));
        let entry = |manager: &str, operation: &str, subresource: Option<&str>, second: i64| ManagedFieldsEntry {
            api_version: Some("cleanmail.io/v1alpha1".into()),
            fields_type: Some("FieldsV1".into()),
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:active": {}}}))),
            time: at(second),
        };
        let mut object = user("a", "a@b.ch", None, 1);
        object.metadata.managed_fields = Some(vec![
            entry("cleanmail-scim", "Update", None, 30),
            entry("cleanmail-controller", "Update", None, 20),
            entry("cleanmail-controller", "Apply", Some("status"), 40),
            entry("argocd", "Apply", None, 10),
        ]);
        let kept = lean(object).metadata.managed_fields.unwrap_or_default();
        let argocd = ManagedFieldsEntry { api_version: None, fields_type: None, ..entry("argocd", "Apply", None, 10) };
        let newest_update = ManagedFieldsEntry { time: at(30), ..Default::default() };
        assert_eq!(kept, [argocd, newest_update]);

        // Created through SCIM, then only provisioned: `meta.lastModified` is the creation time.
        let mut object = user("a", "a@b.ch", None, 1);
        object.metadata.creation_timestamp = at(30);
        object.metadata.labels = Some([("cleanmail.ch/provisioned-by".to_owned(), "scim".to_owned())].into());
        object.metadata.managed_fields = Some(vec![
            entry("cleanmail-scim", "Update", None, 30),
            entry("cleanmail-controller", "Apply", Some("status"), 40),
        ]);
        let lean = lean(object);
        assert_eq!(lean.metadata.managed_fields, None);
        assert_eq!(lean.metadata.labels, None);
    }

    fn user(name: &str, user_name: &str, external_id: Option<&str>, version: u64) -> CleanmailUser {
        let mut user = CleanmailUser::new(
            name,
            CleanmailUserSpec {
                user_name: user_name.into(),
                active: Some(true),
                external_id: external_id.map(Into::into),
                ..Default::default()
            },
        );
        user.metadata.namespace = Some("contoso".into());
        user.metadata.resource_version = Some(version.to_string());
        user
    }

    #[test]
    fn indexes_user_name_case_insensitively_and_external_id_exactly() {
        let store = UserStore::default();
        store.apply(user("a", "Alice@Contoso.ch", Some("AliceX"), 1));
        assert_eq!(store.by_unique_key("contoso", "alice@contoso.CH").len(), 1);
        assert_eq!(store.by_external_id("contoso", "AliceX").len(), 1);
        assert!(store.by_external_id("contoso", "alicex").is_empty());
        assert!(store.by_unique_key("fabrikam", "alice@contoso.ch").is_empty());
    }

    #[test]
    fn a_page_is_a_slice_of_the_namespace_in_name_order_with_the_namespace_total() {
        let store = UserStore::default();
        for (name, version) in [("c", 1), ("a", 2), ("b", 3)] {
            store.apply(user(name, &format!("{name}@contoso.ch"), None, version));
        }
        let names = |(page, total): (Vec<Arc<CleanmailUser>>, usize)| {
            (page.iter().map(|u| u.name_any()).collect::<Vec<_>>(), total)
        };
        assert_eq!(names(store.page("contoso", 1, 5)), (vec!["b".to_owned(), "c".to_owned()], 3));
        assert_eq!(names(store.page("contoso", 0, 1)), (vec!["a".to_owned()], 3));
        assert_eq!(names(store.page("contoso", 3, 1)), (vec![], 3));
        assert_eq!(names(store.page("fabrikam", 0, 1)), (vec![], 0));
    }

    #[test]
    fn rename_moves_the_index_entry() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        store.apply(user("a", "bob@contoso.ch", None, 2));
        assert!(store.by_unique_key("contoso", "alice@contoso.ch").is_empty());
        assert_eq!(store.by_unique_key("contoso", "bob@contoso.ch")[0].name_any(), "a");
    }

    #[test]
    fn older_events_do_not_overwrite_newer_writes() {
        let store = UserStore::default();
        store.apply(user("a", "new@contoso.ch", None, 5));
        store.apply(user("a", "old@contoso.ch", None, 4));
        assert_eq!(store.get("contoso", "a").map(|u| u.spec.user_name.clone()).as_deref(), Some("new@contoso.ch"));
    }

    #[test]
    fn deleted_objects_stay_deleted_despite_late_events() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        let mut deleting = user("a", "alice@contoso.ch", None, 3);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        store.apply(deleting);
        assert!(store.get("contoso", "a").is_none());
        store.apply(user("a", "alice@contoso.ch", None, 2));
        assert!(store.get("contoso", "a").is_none());
        assert!(store.by_unique_key("contoso", "alice@contoso.ch").is_empty());
    }

    fn deleting(mut user: CleanmailUser) -> CleanmailUser {
        user.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        user
    }

    #[test]
    fn the_indexes_and_the_controllers_share_one_copy_of_each_object() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        let indexed = store.get("contoso", "a").expect("indexed");
        let held = store.reader().get(&ObjectRef::new("a").within("contoso")).expect("held");
        assert!(Arc::ptr_eq(&indexed, &held));
    }

    #[test]
    fn objects_being_deleted_leave_the_indexes_but_not_the_controllers_store() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        store.apply(deleting(user("a", "alice@contoso.ch", None, 2)));
        assert!(store.get("contoso", "a").is_none());
        let held = store.reader().get(&ObjectRef::new("a").within("contoso")).expect("still held");
        assert!(held.metadata.deletion_timestamp.is_some());
        store.delete(&deleting(user("a", "alice@contoso.ch", None, 3)));
        assert!(store.reader().is_empty());
    }

    #[tokio::test]
    async fn changes_start_with_every_object_of_the_partition_then_follow_writes() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        let mut elsewhere = user("z", "zoe@fabrikam.ch", None, 2);
        elsewhere.metadata.namespace = Some("fabrikam".into());
        store.apply(elsewhere);
        let mut changes = store.changes(&Some("contoso".into()), &|_| true);
        store.apply(user("b", "bob@contoso.ch", None, 3));
        // The watch event echoing a write this replica recorded already is no change.
        store.apply(user("b", "bob@contoso.ch", None, 3));
        store.apply(user("a", "alice@contoso.ch", None, 4));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let object = changes.next().await.expect("a change");
            seen.push((object.name_any(), object.metadata.resource_version.clone().unwrap_or_default()));
        }
        assert_eq!(seen, [("a".into(), "1".into()), ("b".into(), "3".into()), ("a".into(), "4".into())]);
    }

    #[tokio::test]
    async fn changes_start_with_the_objects_picked_then_follow_every_write() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        store.apply(user("b", "bob@contoso.ch", None, 2));
        let mut changes = store.changes(&Some("contoso".into()), &|user| user.name_any() == "b");
        store.apply(user("a", "alice@contoso.ch", None, 3));
        let first = changes.next().await.expect("a change");
        let second = changes.next().await.expect("a change");
        assert_eq!((first.name_any(), second.name_any()), ("b".into(), "a".into()));
    }

    #[test]
    fn a_walk_over_the_objects_visits_each_once_in_slices() {
        let store = UserStore::default();
        for (namespace, name) in [("b-ns", "x"), ("a-ns", "y"), ("a-ns", "x"), ("c-ns", "z")] {
            let mut object = user(name, &format!("{name}@{namespace}.ch"), None, 1);
            object.metadata.namespace = Some(namespace.into());
            store.apply(object);
        }
        let mut deleted = user("w", "w@a-ns.ch", None, 2);
        deleted.metadata.namespace = Some("a-ns".into());
        store.apply(deleting(deleted));
        let walk = |partition: Partition| {
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let slice = store.slice_after(&partition, cursor.as_ref(), 2);
                seen.extend(slice.iter().map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())));
                if slice.len() < 2 {
                    return seen;
                }
                cursor = slice.last().map(|o| ObjectRef::from_obj(o.as_ref()));
            }
        };
        assert_eq!(walk(None), ["a-ns/x", "a-ns/y", "b-ns/x", "c-ns/z"]);
        assert_eq!(walk(Some("a-ns".into())), ["a-ns/x", "a-ns/y"]);
        assert_eq!((store.count(&None), store.count(&Some("b-ns".into()))), (4, 1));
    }

    #[tokio::test]
    async fn a_relist_forgets_what_it_did_not_list_and_keeps_other_partitions() {
        let store = UserStore::default();
        let mut other = user("z", "zoe@fabrikam.ch", None, 1);
        other.metadata.namespace = Some("fabrikam".into());
        store.apply(other);
        store.apply(user("gone", "gone@contoso.ch", None, 2));
        let events = futures::stream::iter([
            watcher::Event::Init,
            watcher::Event::InitApply(user("a", "alice@contoso.ch", None, 3)),
            watcher::Event::InitDone,
        ])
        .map(|event| (Some("contoso".to_owned()), Ok(event)));
        store.clone().follow(events, 1).await;
        assert!(store.is_ready());
        assert!(store.get("contoso", "gone").is_none());
        assert!(store.reader().get(&ObjectRef::new("gone").within("contoso")).is_none());
        assert!(store.get("contoso", "a").is_some());
        assert!(store.get("fabrikam", "z").is_some());
    }
}
