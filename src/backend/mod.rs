//! Mailbox backends: where accounts live. Designed for remote, slow and fallible stores: every
//! operation is idempotent and keyed by a stable account id, and errors say whether a retry can help.
//! Backends know nothing of Kubernetes.

pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;

/// The state a mailbox account should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAccount {
    /// Stable id that survives renames (the `CleanmailUser` uid).
    pub account_id: String,
    /// Full mail address, lower-cased (mail systems look addresses up case-insensitively).
    pub address: String,
    /// Name shown to people, if known.
    pub display_name: Option<String>,
    /// Whether the account may log in and receive mail; a disabled account keeps its mail.
    pub enabled: bool,
    /// Storage quota in bytes; None = no quota.
    pub quota_bytes: Option<i64>,
    /// Further addresses that deliver to this account, lower-cased; the backend keeps exactly this set.
    pub aliases: Vec<String>,
    /// Opaque label of whoever manages the account (the controller passes "namespace/name"); stored in the
    /// row, so that a later account with the same label may adopt the row when its id changed.
    pub owner: String,
}

/// The state a distribution list should have: one address delivering to its members' mailboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredList {
    /// Stable id that survives renames (the `CleanmailGroup` uid).
    pub list_id: String,
    /// The list's address, lower-cased.
    pub address: String,
    pub display_name: Option<String>,
    /// Account ids of the members; a member whose account is disabled or absent receives nothing.
    pub member_account_ids: Vec<String>,
}

/// What a backend reports about a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List {
    pub list_id: String,
    pub address: String,
    pub display_name: Option<String>,
    pub member_count: usize,
}

/// What a backend reports about an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub address: String,
    pub display_name: Option<String>,
    pub enabled: bool,
    pub quota_bytes: Option<i64>,
    /// Sorted.
    pub aliases: Vec<String>,
    /// None = released, or never managed by the operator (e.g. created by an earlier mail system).
    pub owner: Option<String>,
}

/// What `ensure` had to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    /// An existing account holding the desired address, unowned or owned by the same label, was
    /// re-keyed to the desired account id; its mail, password and creation time were kept.
    Adopted {
        previous_account_id: String,
    },
    /// Something differed (a desired change, or a row edited behind the operator's back) and was written.
    Updated,
    Unchanged,
}

/// The account as `ensure` left it, and what it had to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    pub account: Account,
    pub change: Change,
}

/// Whether retrying the same call later can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The backend is unreachable, overloaded or timed out: retry with backoff.
    Transient,
    /// The request itself cannot succeed as it is (e.g. the address belongs to another account):
    /// retrying is pointless until the desired state changes.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
#[error("{operation} failed for account {account_id}: {message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub operation: &'static str,
    pub account_id: String,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// A store of mailbox accounts.
#[async_trait]
pub trait MailboxBackend: Send + Sync {
    /// Creates the account, adopts an unowned one holding the same address, or brings it to
    /// `desired`; writes nothing when it already matches.
    async fn ensure(&self, desired: &DesiredAccount) -> Result<Ensured>;
    /// Disables the account, keeping its mail; a no-op when it is absent or already disabled.
    async fn disable(&self, account_id: &str) -> Result<()>;
    /// Leaves the account to nobody: clears its owner so a later account with the same address adopts it
    /// (mail kept); with `disable` also disables it. A no-op when absent.
    async fn release(&self, account_id: &str, disable: bool) -> Result<()>;
    /// Removes the account and its aliases; a no-op when it is absent.
    async fn delete(&self, account_id: &str) -> Result<()>;
    /// Reads the account, if it exists.
    async fn get(&self, account_id: &str) -> Result<Option<Account>>;
    /// Every account whose domain is one of `domains` (compared lower-case), ordered by address.
    async fn accounts_in(&self, domains: &[String]) -> Result<Vec<Account>>;
    /// Creates the list or brings its address, name and exact member set to `desired`.
    async fn ensure_list(&self, desired: &DesiredList) -> Result<List>;
    /// Removes the list and its memberships (never the members' accounts); a no-op when absent.
    async fn delete_list(&self, list_id: &str) -> Result<()>;
}

/// Connected backends by URL, so every tenant on the same database shares one connection pool.
pub struct BackendRegistry {
    default_url: String,
    connected: std::sync::Mutex<std::collections::HashMap<String, Arc<Connection>>>,
}

/// One URL's backend, connected by the first caller; the others wait for that caller alone, so a
/// database that does not answer holds up its own tenants only, not every reconcile.
type Connection = tokio::sync::OnceCell<Arc<dyn MailboxBackend>>;

impl BackendRegistry {
    /// `default_url` serves tenants that name no backend of their own.
    pub fn new(default_url: impl Into<String>) -> Self {
        BackendRegistry { default_url: default_url.into(), connected: Default::default() }
    }

    /// The backend at `url` (the default when `None`), connecting on first use; a failed
    /// connection is tried again by the next caller.
    pub async fn get(&self, url: Option<&str>) -> Result<Arc<dyn MailboxBackend>> {
        let url = url.unwrap_or(&self.default_url);
        let connection = {
            let mut connected = self.connected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            connected.entry(url.to_owned()).or_default().clone()
        };
        let backend = connection
            .get_or_try_init(|| async {
                Ok::<_, BackendError>(Arc::new(sql::SqlBackend::connect(url).await?) as Arc<dyn MailboxBackend>)
            })
            .await?;
        Ok(backend.clone())
    }
}
