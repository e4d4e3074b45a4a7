//! The SCIM read model: every `CleanmailUser` (and `CleanmailGroup`), indexed per tenant namespace
//! by name (the SCIM id), by its lower-cased unique attribute (`userName`, `displayName`) and by
//! `externalId`, fed by a watch and by this replica's own writes so that a read right after a write
//! sees it.
//!
//! Objects being deleted are not SCIM-visible: Entra must get 404 after DELETE even while the
//! controller is still cleaning up the mailbox behind a finalizer.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use kube::{ResourceExt, runtime::watcher};
use tokio::sync::watch;

use crate::{
    crd::{CleanmailGroup, CleanmailGroupStatus, CleanmailUser, CleanmailUserStatus},
    scope::Partition,
};

/// A resource the read model can index.
pub trait Indexed: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// The attribute unique per tenant, lower-cased (RFC 7643: `caseExact` false).
    fn unique_key(&self) -> String;
    fn external_id(&self) -> Option<&str>;
    /// The generation the controller last reported on (`status.observedGeneration`).
    fn observed_generation(&self) -> Option<i64>;
    /// Drops the status but for `observedGeneration`, the one part of it the SCIM edge reads.
    fn keep_observed_generation_only(&mut self);
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
    fn keep_observed_generation_only(&mut self) {
        self.status = self.status.take().map(|status| CleanmailUserStatus {
            observed_generation: status.observed_generation,
            ..Default::default()
        });
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
    fn keep_observed_generation_only(&mut self) {
        self.status = self.status.take().map(|status| CleanmailGroupStatus {
            observed_generation: status.observed_generation,
            ..Default::default()
        });
    }
}

pub type UserStore = ResourceStore<CleanmailUser>;
pub type GroupStore = ResourceStore<CleanmailGroup>;

/// How long a deletion is remembered so a late watch event cannot bring the object back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// An object's name, shared by the name map and the indexes.
type Name = Arc<str>;

/// The names an index key leads to: nearly always one, so a sorted vector rather than a set,
/// which would cost a whole tree node per key.
#[derive(Default)]
struct Names(Vec<Name>);

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
    by_unique_key: HashMap<String, Names>,
    by_external_id: HashMap<String, Names>,
    tombstones: HashMap<String, (u64, Instant)>,
}

impl<K> Default for Namespace<K> {
    fn default() -> Self {
        Namespace {
            by_name: BTreeMap::new(),
            by_unique_key: HashMap::new(),
            by_external_id: HashMap::new(),
            tombstones: HashMap::new(),
        }
    }
}

impl<K: Indexed> Namespace<K> {
    fn insert(&mut self, object: Arc<K>) {
        let name: Name = object.name_any().into();
        self.remove(&name);
        self.by_unique_key.entry(object.unique_key()).or_default().insert(name.clone());
        if let Some(external_id) = object.external_id() {
            self.by_external_id.entry(external_id.to_string()).or_default().insert(name.clone());
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

    fn is_stale(&self, name: &str, version: Option<u64>) -> bool {
        let Some(version) = version else { return false };
        let known = self.by_name.get(name).and_then(|u| resource_version(u.as_ref()));
        let buried = self.tombstones.get(name).map(|(v, _)| *v);
        known.into_iter().chain(buried).any(|newest| version < newest)
    }

    fn bury(&mut self, name: &str, version: Option<u64>) {
        let now = Instant::now();
        self.tombstones.retain(|_, (_, at)| now.duration_since(*at) < TOMBSTONE_TTL);
        if let Some(version) = version {
            self.tombstones.insert(name.to_string(), (version, now));
        }
    }
}

fn remove_from(index: &mut HashMap<String, Names>, key: &str, name: &str) {
    if let Some(names) = index.get_mut(key) {
        names.remove(name);
        if names.0.is_empty() {
            index.remove(key);
        }
    }
}

/// Resource versions are opaque to clients, but the API server hands them out from one increasing
/// counter; comparing them is only used to drop events older than what this replica already saw.
fn resource_version<K: kube::Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// Shared, cheaply cloneable handle on the read model of one resource kind.
pub struct ResourceStore<K> {
    namespaces: Arc<RwLock<HashMap<String, Namespace<K>>>>,
    ready: watch::Sender<bool>,
}

impl<K> Clone for ResourceStore<K> {
    fn clone(&self) -> Self {
        ResourceStore { namespaces: self.namespaces.clone(), ready: self.ready.clone() }
    }
}

/// `object` without what the SCIM edge never reads, which is most of its size in memory: the
/// status but for `observedGeneration`, `kubectl apply`'s copy of the whole object in an
/// annotation, and of `managedFields` the field sets of updates and status writes. Kept are every
/// entry's manager, operation and time (for `meta.lastModified`) and the field sets of server-side
/// applies to the object itself (for the fields SCIM must not change).
fn lean<K: Indexed>(mut object: K) -> K {
    object.keep_observed_generation_only();
    crate::scope::drop_last_applied(object.meta_mut());
    for entry in object.meta_mut().managed_fields.iter_mut().flatten() {
        let applied_to_object =
            entry.operation.as_deref() == Some("Apply") && entry.subresource.as_deref().unwrap_or_default().is_empty();
        if !applied_to_object {
            entry.fields_v1 = None;
        }
    }
    object
}

impl<K> Default for ResourceStore<K> {
    fn default() -> Self {
        ResourceStore { namespaces: Arc::default(), ready: watch::channel(false).0 }
    }
}

impl<K: Indexed> ResourceStore<K> {
    /// Records an object this replica wrote or observed; an older version than the one held is ignored.
    pub fn apply(&self, user: K) {
        let Some(namespace) = user.namespace() else { return };
        let name = user.name_any();
        let version = resource_version(&user);
        let mut namespaces = self.write();
        let ns = namespaces.entry(namespace).or_default();
        if ns.is_stale(&name, version) {
            return;
        }
        if user.meta().deletion_timestamp.is_some() {
            ns.remove(&name);
            ns.bury(&name, version);
        } else {
            ns.tombstones.remove(&name);
            ns.insert(Arc::new(lean(user)));
        }
    }

    /// Records that an object is gone.
    pub fn delete(&self, user: &K) {
        let Some(namespace) = user.namespace() else { return };
        let name = user.name_any();
        let mut namespaces = self.write();
        let ns = namespaces.entry(namespace).or_default();
        if ns.is_stale(&name, resource_version(user)) {
            return;
        }
        ns.remove(&name);
        ns.bury(&name, resource_version(user));
    }

    /// Replaces what is known of `partition` after a (re)list with `fresh`, keeping nothing of it
    /// from before.
    fn reset(&self, partition: &Partition, mut fresh: HashMap<String, Namespace<K>>) {
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
        self.lookup(namespace, |ns| ns.by_unique_key.get(&key.to_lowercase()))
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

    pub fn len(&self, namespace: &str) -> usize {
        self.read().get(namespace).map_or(0, |ns| ns.by_name.len())
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// How many objects have a spec the controller has not reported on yet.
    pub fn backlog(&self) -> usize {
        let behind = |object: &Arc<K>| object.observed_generation() < object.meta().generation;
        self.read().values().map(|ns| ns.by_name.values().filter(|o| behind(o)).count()).sum()
    }

    /// Resolves once the first full list has been loaded.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Feeds the store from the watches of `partitions` until they end; ready once every
    /// partition has been listed.
    pub async fn follow<S>(self, events: S, partitions: usize)
    where
        S: Stream<Item = (Partition, Result<watcher::Event<K>, watcher::Error>)>,
    {
        // What each partition's (re)list has brought so far, indexed as it arrives: holding the
        // listed objects whole until the list ends would double the replica's peak of memory.
        let mut relists: HashMap<Partition, HashMap<String, Namespace<K>>> = HashMap::new();
        let mut listed = HashSet::new();
        let mut events = std::pin::pin!(events);
        while let Some((partition, event)) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => drop(relists.insert(partition, HashMap::new())),
                Ok(watcher::Event::InitApply(object)) => {
                    let (Some(namespace), None) = (object.namespace(), &object.meta().deletion_timestamp) else {
                        continue;
                    };
                    let fresh = relists.entry(partition).or_default();
                    fresh.entry(namespace).or_default().insert(Arc::new(lean(object)));
                }
                Ok(watcher::Event::InitDone) => {
                    self.reset(&partition, relists.remove(&partition).unwrap_or_default());
                    listed.insert(partition);
                    if listed.len() >= partitions {
                        self.ready.send_replace(true);
                    }
                }
                Ok(watcher::Event::Apply(object)) => self.apply(object),
                Ok(watcher::Event::Delete(object)) => self.delete(&object),
                Err(error) => tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying"),
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Namespace<K>>> {
        self.namespaces.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Namespace<K>>> {
        self.namespaces.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanmailUserSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    #[test]
    fn the_read_model_keeps_only_the_field_sets_of_applies_to_the_object() {
        let entry = |manager: &str, operation: &str, subresource: Option<&str>| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:active": {}}}))),
            ..Default::default()
        };
        let mut object = user("a", "a@b.ch", None, 1);
        object.metadata.managed_fields = Some(vec![
            entry("cleanmail-scim", "Update", None),
            entry("cleanmail-controller", "Apply", Some("status")),
            entry("argocd", "Apply", None),
        ]);
        let kept: Vec<(Option<String>, bool)> = lean(object)
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.manager, e.fields_v1.is_some()))
            .collect();
        assert_eq!(
            kept,
            [
                (Some("cleanmail-scim".into()), false),
                (Some("cleanmail-controller".into()), false),
                (Some("argocd".into()), true)
            ]
        );
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
}
