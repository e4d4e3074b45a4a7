//! Tenants and bearer-token authentication.
//!
//! A `CleanmailTenant` names a Secret whose every value is a valid SCIM bearer token. The registry
//! keeps, per namespace, what the SCIM edge and the controller need to know about its tenant, and a
//! map from token digest to namespace. Secrets are re-read periodically, so a rotated token takes
//! effect within [`SECRET_REFRESH`] without watching every Secret in the cluster.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::api::resource::Quantity};
use kube::{Api, Client, ResourceExt, runtime::watcher};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::{
    crd::{CleanmailTenant, DeletionPolicy, SecretKeyRef},
    scope::{Partition, Scope},
};

/// How often token and backend Secrets are re-read.
pub const SECRET_REFRESH: Duration = Duration::from_secs(15);

type TokenDigest = [u8; 32];

/// Everything the rest of the operator needs to know about one namespace's tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub namespace: String,
    pub name: String,
    /// Allowed mail domains, lower-cased.
    pub domains: Vec<String>,
    pub deletion_policy: DeletionPolicy,
    /// The quota of mailboxes whose user sets none.
    pub default_quota: Option<Quantity>,
    /// Whether SCIM may delete users applied in the cluster.
    pub scim_may_delete_applied_users: bool,
    /// Where this tenant's mailboxes live.
    pub backend: BackendChoice,
    /// Why the tenant cannot be used, as (reason, message); `None` when it is usable.
    pub problem: Option<(String, String)>,
    tokens: Vec<TokenDigest>,
}

/// Which backend a tenant's mailboxes live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The operator's default backend.
    Default,
    /// The database at this URL (read from the tenant's Secret).
    Url(String),
    /// The tenant names a backend whose URL cannot be read; nothing may be provisioned.
    Unresolved(String),
}

impl Tenant {
    /// The URL of the tenant's own backend; `None` for the operator's default (or an unresolved one,
    /// which callers refuse before they connect).
    pub fn backend_url(&self) -> Option<&str> {
        match &self.backend {
            BackendChoice::Url(url) => Some(url),
            _ => None,
        }
    }

    /// Whether `user_name` is a mail address in one of this tenant's domains.
    pub fn allows(&self, user_name: &str) -> bool {
        match user_name.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                self.domains.iter().any(|allowed| allowed.eq_ignore_ascii_case(domain))
            }
            _ => false,
        }
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

#[derive(Default)]
struct Registry {
    /// The tenant of each namespace: the first `CleanmailTenant` by name when there are several.
    by_namespace: HashMap<String, Arc<Tenant>>,
    /// Every tenant object, including ignored duplicates, keyed by (namespace, name).
    objects: HashMap<(String, String), CleanmailTenant>,
    by_token: HashMap<TokenDigest, Vec<String>>,
}

/// Shared handle on the tenants known to this replica.
#[derive(Clone)]
pub struct TenantRegistry {
    inner: Arc<RwLock<Registry>>,
    secrets: SecretCache,
    ready: watch::Sender<bool>,
}

/// The Secret values tenants reference, re-read on every tenant change and every [`SECRET_REFRESH`].
#[derive(Clone, Default)]
struct SecretCache(Arc<RwLock<HashMap<SecretKey, Option<Secret>>>>);

/// (namespace, name)
type SecretKey = (String, String);

impl TenantRegistry {
    pub fn new() -> Self {
        TenantRegistry { inner: Arc::default(), secrets: SecretCache::default(), ready: watch::channel(false).0 }
    }

    /// The tenant whose token this is, if exactly one tenant has it.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Tenant>> {
        let digest = digest(token.trim());
        let registry = self.read();
        let namespaces = registry.by_token.get(&digest)?;
        let [namespace] = namespaces.as_slice() else {
            tracing::warn!(count = namespaces.len(), "a bearer token is shared by several tenants; refusing it");
            return None;
        };
        let tenant = registry.by_namespace.get(namespace)?;
        let matched = tenant.tokens.iter().fold(subtle::Choice::from(0), |found, t| found | t.ct_eq(&digest));
        bool::from(matched).then(|| tenant.clone())
    }

    pub fn tenant(&self, namespace: &str) -> Option<Arc<Tenant>> {
        self.read().by_namespace.get(namespace).cloned()
    }

    /// Every tenant object with what the registry derived for its namespace (for status reporting).
    pub fn objects(&self) -> Vec<CleanmailTenant> {
        self.read().objects.values().cloned().collect()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Watches the tenants of `scope` and keeps their Secrets fresh until the watch ends.
    pub async fn run(self, client: Client, scope: Scope) {
        let refresh = {
            let this = self.clone();
            let client = client.clone();
            async move {
                let mut tick = tokio::time::interval(SECRET_REFRESH);
                loop {
                    tick.tick().await;
                    if this.is_ready() {
                        this.refresh_secrets(&client).await;
                    }
                }
            }
        };
        let follow = async {
            let partitions = scope.partitions().len();
            let mut events = std::pin::pin!(scope.watch::<CleanmailTenant>(&client, &watcher::Config::default()));
            let mut relists: HashMap<Partition, Vec<CleanmailTenant>> = HashMap::new();
            let mut listed = HashSet::new();
            while let Some((partition, event)) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => drop(relists.insert(partition, Vec::new())),
                    Ok(watcher::Event::InitApply(tenant)) => relists.entry(partition).or_default().push(tenant),
                    Ok(watcher::Event::InitDone) => {
                        self.replace_partition(&partition, relists.remove(&partition).unwrap_or_default());
                        self.refresh_secrets(&client).await;
                        listed.insert(partition);
                        if listed.len() >= partitions {
                            self.ready.send_replace(true);
                        }
                    }
                    Ok(watcher::Event::Apply(tenant)) => {
                        self.write().objects.insert(key(&tenant), tenant.clone());
                        self.fetch_secrets_of(&client, &tenant).await;
                        self.rebuild();
                    }
                    Ok(watcher::Event::Delete(tenant)) => {
                        self.write().objects.remove(&key(&tenant));
                        self.rebuild();
                    }
                    Err(error) => tracing::warn!(%error, "tenant watch failed; retrying"),
                }
            }
        };
        tokio::select! { _ = refresh => {}, _ = follow => {} }
    }

    /// After a relist of `partition`, its tenants are exactly `tenants`; other namespaces stay.
    fn replace_partition(&self, partition: &Partition, tenants: Vec<CleanmailTenant>) {
        let mut inner = self.write();
        inner.objects.retain(|_, tenant| partition.as_ref().is_some_and(|ns| tenant.namespace().as_ref() != Some(ns)));
        inner.objects.extend(tenants.into_iter().map(|t| (key(&t), t)));
    }

    async fn refresh_secrets(&self, client: &Client) {
        let objects = self.objects();
        for tenant in &objects {
            self.fetch_secrets_of(client, tenant).await;
        }
        self.rebuild();
    }

    async fn fetch_secrets_of(&self, client: &Client, tenant: &CleanmailTenant) {
        let namespace = tenant.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        for name in referenced_secrets(tenant) {
            match secrets.get_opt(&name).await {
                Ok(secret) => self.secrets.put(&namespace, &name, secret),
                Err(error) => {
                    // Keep the last known value: an API hiccup must not log every tenant out.
                    tracing::warn!(%error, %namespace, secret = %name, "cannot read tenant secret");
                }
            }
        }
    }

    fn rebuild(&self) {
        let mut registry = self.write();
        let mut objects: Vec<&CleanmailTenant> = registry.objects.values().collect();
        objects.sort_by_key(|t| key(t));
        let mut by_namespace = HashMap::new();
        for object in objects {
            let namespace = object.namespace().unwrap_or_default();
            by_namespace.entry(namespace).or_insert_with(|| Arc::new(self.derive(object)));
        }
        let mut by_token: HashMap<TokenDigest, Vec<String>> = HashMap::new();
        for tenant in by_namespace.values() {
            for token in &tenant.tokens {
                by_token.entry(*token).or_default().push(tenant.namespace.clone());
            }
        }
        registry.by_namespace = by_namespace;
        registry.by_token = by_token;
    }

    fn derive(&self, object: &CleanmailTenant) -> Tenant {
        let namespace = object.namespace().unwrap_or_default();
        let spec = &object.spec;
        let token_secret = self.secrets.get(&namespace, &spec.token_secret_ref.name);
        let tokens: Vec<TokenDigest> = token_secret
            .iter()
            .flat_map(|s| s.data.iter().flatten())
            .filter_map(|(_, value)| std::str::from_utf8(&value.0).ok())
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(digest)
            .collect();
        let backend_url = spec.backend.as_ref().and_then(|b| b.sql.as_ref()).map(|sql| {
            let secret = self.secrets.get(&namespace, &sql.url_secret_ref.name);
            secret_value(secret.as_ref(), &sql.url_secret_ref)
        });
        let problem = if token_secret.is_none() {
            Some(("TokenSecretMissing".into(), format!("Secret {} does not exist", spec.token_secret_ref.name)))
        } else if tokens.is_empty() {
            Some(("NoToken".into(), format!("Secret {} holds no token", spec.token_secret_ref.name)))
        } else if spec.domains.is_empty() {
            Some(("NoDomains".into(), "spec.domains lists no mail domain".into()))
        } else if let Some(Err(message)) = &backend_url {
            Some(("BackendSecretMissing".into(), message.clone()))
        } else {
            None
        };
        Tenant {
            namespace,
            name: object.name_any(),
            domains: spec.domains.iter().map(|d| d.trim().to_lowercase()).collect(),
            deletion_policy: spec.deletion_policy,
            default_quota: spec.default_quota.clone(),
            scim_may_delete_applied_users: spec.scim_may_delete_applied_users,
            backend: match backend_url {
                None => BackendChoice::Default,
                Some(Ok(url)) => BackendChoice::Url(url),
                Some(Err(message)) => BackendChoice::Unresolved(message),
            },
            // A tenant with a problem authenticates nobody.
            tokens: if problem.is_some() { Vec::new() } else { tokens },
            problem,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for TenantRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretCache {
    fn put(&self, namespace: &str, name: &str, secret: Option<Secret>) {
        let mut map = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert((namespace.to_string(), name.to_string()), secret);
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Secret> {
        let map = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&(namespace.to_string(), name.to_string())).cloned().flatten()
    }
}

fn key(tenant: &CleanmailTenant) -> (String, String) {
    (tenant.namespace().unwrap_or_default(), tenant.name_any())
}

fn referenced_secrets(tenant: &CleanmailTenant) -> Vec<String> {
    let mut names = vec![tenant.spec.token_secret_ref.name.clone()];
    if let Some(sql) = tenant.spec.backend.as_ref().and_then(|b| b.sql.as_ref()) {
        names.push(sql.url_secret_ref.name.clone());
    }
    names
}

fn secret_value(secret: Option<&Secret>, reference: &SecretKeyRef) -> Result<String, String> {
    let secret = secret.ok_or_else(|| format!("Secret {} does not exist", reference.name))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .ok_or_else(|| format!("Secret {} has no key {}", reference.name, reference.key))?;
    String::from_utf8(value.0.clone())
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("Secret {} key {} is not UTF-8", reference.name, reference.key))
}

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CleanmailTenantSpec, SecretRef};
    use k8s_openapi::ByteString;

    fn registry_with(tenants: &[(&str, &str)]) -> TenantRegistry {
        let registry = TenantRegistry::new();
        for (namespace, token) in tenants {
            let mut tenant = CleanmailTenant::new(
                "tenant",
                CleanmailTenantSpec {
                    token_secret_ref: SecretRef { name: "scim-token".into() },
                    domains: vec![format!("{namespace}.ch")],
                    ..Default::default()
                },
            );
            tenant.metadata.namespace = Some(namespace.to_string());
            let secret = Secret {
                data: Some([("token".to_string(), ByteString(format!("{token}\n").into_bytes()))].into()),
                ..Default::default()
            };
            registry.secrets.put(namespace, "scim-token", Some(secret));
            registry.write().objects.insert(key(&tenant), tenant);
        }
        registry.rebuild();
        registry
    }

    #[test]
    fn a_token_resolves_to_its_tenant() {
        let registry = registry_with(&[("contoso", "secret-a"), ("fabrikam", "secret-b")]);
        assert_eq!(registry.authenticate("secret-a").map(|t| t.namespace.clone()).as_deref(), Some("contoso"));
        assert_eq!(registry.authenticate("secret-b").map(|t| t.namespace.clone()).as_deref(), Some("fabrikam"));
        assert!(registry.authenticate("secret-c").is_none());
        assert!(registry.authenticate("").is_none());
    }

    #[test]
    fn a_token_shared_by_two_tenants_resolves_to_none() {
        let registry = registry_with(&[("contoso", "same"), ("fabrikam", "same")]);
        assert!(registry.authenticate("same").is_none());
    }

    #[test]
    fn domains_are_matched_case_insensitively_on_the_part_after_the_last_at() {
        let registry = registry_with(&[("contoso", "t")]);
        let tenant = registry.tenant("contoso").expect("tenant");
        assert!(tenant.allows("Alice@Contoso.CH"));
        assert!(!tenant.allows("alice@fabrikam.ch"));
        assert!(!tenant.allows("alice@contoso.ch.evil.com"));
        assert!(!tenant.allows("@contoso.ch"));
        assert!(!tenant.allows("contoso.ch"));
    }
}

/// Builders for other modules' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn tenant(namespace: &str, domains: &[&str]) -> Tenant {
        Tenant {
            namespace: namespace.into(),
            name: "tenant".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            deletion_policy: DeletionPolicy::Delete,
            default_quota: None,
            scim_may_delete_applied_users: false,
            backend: BackendChoice::Default,
            problem: None,
            tokens: Vec::new(),
        }
    }
}
