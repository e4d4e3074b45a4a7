//! The SCIM read model: every `CleanmailUser`, indexed per tenant namespace by name (the SCIM id),
//! by lower-cased `userName` and by `externalId`, fed by a watch and by this replica's own writes so
//! that a read right after a write sees it.
//!
//! Objects being deleted are not SCIM-visible: Entra must get 404 after DELETE even while the
//! controller is still cleaning up the mailbox behind a finalizer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use kube::{ResourceExt, runtime::watcher};
use tokio::sync::watch;

use crate::crd::CleanmailUser;

/// How long a deletion is remembered so a late watch event cannot bring the object back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Namespace {
    by_name: BTreeMap<String, Arc<CleanmailUser>>,
    by_user_name: HashMap<String, BTreeSet<String>>,
    by_external_id: HashMap<String, BTreeSet<String>>,
    tombstones: HashMap<String, (u64, Instant)>,
}

impl Namespace {
    fn insert(&mut self, user: Arc<CleanmailUser>) {
        let name = user.name_any();
        self.remove(&name);
        self.by_user_name.entry(user.spec.user_name.to_lowercase()).or_default().insert(name.clone());
        if let Some(external_id) = &user.spec.external_id {
            self.by_external_id.entry(external_id.clone()).or_default().insert(name.clone());
        }
        self.by_name.insert(name, user);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<CleanmailUser>> {
        let old = self.by_name.remove(name)?;
        remove_from(&mut self.by_user_name, &old.spec.user_name.to_lowercase(), name);
        if let Some(external_id) = &old.spec.external_id {
            remove_from(&mut self.by_external_id, external_id, name);
        }
        Some(old)
    }

    fn is_stale(&self, name: &str, version: Option<u64>) -> bool {
        let Some(version) = version else { return false };
        let known = self.by_name.get(name).and_then(|u| resource_version(u));
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

fn remove_from(index: &mut HashMap<String, BTreeSet<String>>, key: &str, name: &str) {
    if let Some(names) = index.get_mut(key) {
        names.remove(name);
        if names.is_empty() {
            index.remove(key);
        }
    }
}

/// Resource versions are opaque to clients, but the API server hands them out from one increasing
/// counter; comparing them is only used to drop events older than what this replica already saw.
fn resource_version(user: &CleanmailUser) -> Option<u64> {
    user.metadata.resource_version.as_deref()?.parse().ok()
}

/// Shared, cheaply cloneable handle on the read model.
#[derive(Clone)]
pub struct UserStore {
    namespaces: Arc<RwLock<HashMap<String, Namespace>>>,
    ready: watch::Sender<bool>,
}

impl Default for UserStore {
    fn default() -> Self {
        UserStore { namespaces: Arc::default(), ready: watch::channel(false).0 }
    }
}

impl UserStore {
    /// Records an object this replica wrote or observed; an older version than the one held is ignored.
    pub fn apply(&self, user: CleanmailUser) {
        let Some(namespace) = user.namespace() else { return };
        let name = user.name_any();
        let version = resource_version(&user);
        let mut namespaces = self.write();
        let ns = namespaces.entry(namespace).or_default();
        if ns.is_stale(&name, version) {
            return;
        }
        if user.metadata.deletion_timestamp.is_some() {
            ns.remove(&name);
            ns.bury(&name, version);
        } else {
            ns.tombstones.remove(&name);
            ns.insert(Arc::new(user));
        }
    }

    /// Records that an object is gone.
    pub fn delete(&self, user: &CleanmailUser) {
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

    /// Replaces everything after a (re)list, keeping nothing from before.
    fn reset(&self, users: Vec<CleanmailUser>) {
        let mut fresh: HashMap<String, Namespace> = HashMap::new();
        for user in users {
            if user.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(namespace) = user.namespace() {
                fresh.entry(namespace).or_default().insert(Arc::new(user));
            }
        }
        *self.write() = fresh;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CleanmailUser>> {
        self.read().get(namespace)?.by_name.get(name).cloned()
    }

    /// Users whose `userName` equals `user_name` case-insensitively (RFC 7643: `caseExact` false).
    pub fn by_user_name(&self, namespace: &str, user_name: &str) -> Vec<Arc<CleanmailUser>> {
        self.lookup(namespace, |ns| ns.by_user_name.get(&user_name.to_lowercase()))
    }

    /// Users whose `externalId` equals `external_id` exactly.
    pub fn by_external_id(&self, namespace: &str, external_id: &str) -> Vec<Arc<CleanmailUser>> {
        self.lookup(namespace, |ns| ns.by_external_id.get(external_id))
    }

    fn lookup(
        &self,
        namespace: &str,
        index: impl Fn(&Namespace) -> Option<&BTreeSet<String>>,
    ) -> Vec<Arc<CleanmailUser>> {
        let namespaces = self.read();
        let Some(ns) = namespaces.get(namespace) else { return Vec::new() };
        index(ns).map(|names| names.iter().filter_map(|n| ns.by_name.get(n).cloned()).collect()).unwrap_or_default()
    }

    /// Every user of a namespace in id order, for scans and paging.
    pub fn all(&self, namespace: &str) -> Vec<Arc<CleanmailUser>> {
        self.read().get(namespace).map(|ns| ns.by_name.values().cloned().collect()).unwrap_or_default()
    }

    pub fn len(&self, namespace: &str) -> usize {
        self.read().get(namespace).map_or(0, |ns| ns.by_name.len())
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first full list has been loaded.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Feeds the store from a watch stream until the stream ends.
    pub async fn follow<S>(self, events: S)
    where
        S: Stream<Item = Result<watcher::Event<CleanmailUser>, watcher::Error>>,
    {
        let mut relist = Vec::new();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(user)) => relist.push(user),
                Ok(watcher::Event::InitDone) => {
                    self.reset(std::mem::take(&mut relist));
                    self.ready.send_replace(true);
                }
                Ok(watcher::Event::Apply(user)) => self.apply(user),
                Ok(watcher::Event::Delete(user)) => self.delete(&user),
                Err(error) => tracing::warn!(%error, "user watch failed; retrying"),
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Namespace>> {
        self.namespaces.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Namespace>> {
        self.namespaces.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanmailUserSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn user(name: &str, user_name: &str, external_id: Option<&str>, version: u64) -> CleanmailUser {
        let mut user = CleanmailUser::new(
            name,
            CleanmailUserSpec {
                user_name: user_name.into(),
                active: true,
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
        assert_eq!(store.by_user_name("contoso", "alice@contoso.CH").len(), 1);
        assert_eq!(store.by_external_id("contoso", "AliceX").len(), 1);
        assert!(store.by_external_id("contoso", "alicex").is_empty());
        assert!(store.by_user_name("fabrikam", "alice@contoso.ch").is_empty());
    }

    #[test]
    fn rename_moves_the_index_entry() {
        let store = UserStore::default();
        store.apply(user("a", "alice@contoso.ch", None, 1));
        store.apply(user("a", "bob@contoso.ch", None, 2));
        assert!(store.by_user_name("contoso", "alice@contoso.ch").is_empty());
        assert_eq!(store.by_user_name("contoso", "bob@contoso.ch")[0].name_any(), "a");
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
        assert!(store.by_user_name("contoso", "alice@contoso.ch").is_empty());
    }
}
