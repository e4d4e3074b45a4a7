//! Which namespaces the operator watches: all of them (cluster-wide RBAC), or a listed set, so it
//! can run with Roles in the tenant namespaces only. Every watch of the operator goes through here.

use futures::{Stream, StreamExt, stream::select_all};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

/// The namespaces watched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Cluster,
    Namespaces(Vec<String>),
}

/// `kubectl apply`'s copy of the whole object as last applied, which no part of the operator reads.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no cache of the operator reads yet would weigh most in it: `kubectl apply`'s copy of
/// the object. `managedFields` are the callers' to trim, as the SCIM edge reads some of them.
pub fn drop_last_applied(meta: &mut ObjectMeta) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// The part of the cluster one watch covers: a namespace, or (`None`) all of them. A relist
/// replaces what is known of its partition only.
pub type Partition = Option<String>;

impl Scope {
    /// An empty list means the whole cluster; blanks and repeats are dropped.
    pub fn from_list(list: &[String]) -> Self {
        let mut namespaces: Vec<String> = list.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        namespaces.sort();
        namespaces.dedup();
        if namespaces.is_empty() { Scope::Cluster } else { Scope::Namespaces(namespaces) }
    }

    pub fn partitions(&self) -> Vec<Partition> {
        match self {
            Scope::Cluster => vec![None],
            Scope::Namespaces(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        }
    }

    pub fn api<K>(client: &Client, partition: &Partition) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match partition {
            None => Api::all(client.clone()),
            Some(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }

    /// One merged watch over every partition; each event says which partition it belongs to.
    pub fn watch<K>(
        &self,
        client: &Client,
        config: &watcher::Config,
    ) -> impl Stream<Item = (Partition, Result<watcher::Event<K>, watcher::Error>)> + Send + use<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        select_all(self.partitions().into_iter().map(|partition| {
            let events = watcher(Self::api::<K>(client, &partition), config.clone()).default_backoff();
            events.map(move |event| (partition.clone(), event)).boxed()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_applied_copy_is_dropped_and_other_annotations_kept() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [
                    (LAST_APPLIED_ANNOTATION.to_owned(), "{}".to_owned()),
                    ("cleanmail.ch/protected".into(), "true".into()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        drop_last_applied(&mut meta);
        assert_eq!(meta.annotations.unwrap_or_default().into_keys().collect::<Vec<_>>(), ["cleanmail.ch/protected"]);
    }

    #[test]
    fn an_empty_list_is_the_whole_cluster() {
        assert_eq!(Scope::from_list(&[]), Scope::Cluster);
        assert_eq!(Scope::from_list(&[" ".into(), String::new()]), Scope::Cluster);
        assert_eq!(Scope::Cluster.partitions(), vec![None]);
    }

    #[test]
    fn listed_namespaces_are_trimmed_and_deduplicated() {
        let scope = Scope::from_list(&["b".into(), " a ".into(), "b".into()]);
        assert_eq!(scope, Scope::Namespaces(vec!["a".into(), "b".into()]));
        assert_eq!(scope.partitions(), vec![Some("a".to_string()), Some("b".to_string())]);
    }
}
