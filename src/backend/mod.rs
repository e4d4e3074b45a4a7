//! Mailbox backends: where accounts live. Designed for remote, slow and fallible stores: every
//! operation is idempotent and keyed by a stable account id, and errors say whether a retry can help.
//! Backends know nothing of Kubernetes.

pub mod sql;

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
    /// Creates the account or brings it to `desired`; a no-op when it already matches.
    async fn ensure(&self, desired: &DesiredAccount) -> Result<Account>;
    /// Disables the account, keeping its mail; a no-op when it is absent or already disabled.
    async fn disable(&self, account_id: &str) -> Result<()>;
    /// Removes the account; a no-op when it is absent.
    async fn delete(&self, account_id: &str) -> Result<()>;
    /// Reads the account, if it exists.
    async fn get(&self, account_id: &str) -> Result<Option<Account>>;
    /// Creates the list or brings its address, name and exact member set to `desired`.
    async fn ensure_list(&self, desired: &DesiredList) -> Result<List>;
    /// Removes the list and its memberships (never the members' accounts); a no-op when absent.
    async fn delete_list(&self, list_id: &str) -> Result<()>;
}

/// Connected backends by URL, so every tenant on the same database shares one connection pool.
pub struct BackendRegistry {
    default_url: String,
    connected: tokio::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<dyn MailboxBackend>>>,
}

impl BackendRegistry {
    /// `default_url` serves tenants that name no backend of their own.
    pub fn new(default_url: impl Into<String>) -> Self {
        BackendRegistry { default_url: default_url.into(), connected: Default::default() }
    }

    /// The backend at `url` (the default when `None`), connecting on first use.
    pub async fn get(&self, url: Option<&str>) -> Result<std::sync::Arc<dyn MailboxBackend>> {
        let url = url.unwrap_or(&self.default_url);
        let mut connected = self.connected.lock().await;
        if let Some(backend) = connected.get(url) {
            return Ok(backend.clone());
        }
        let backend: std::sync::Arc<dyn MailboxBackend> = std::sync::Arc::new(sql::SqlBackend::connect(url).await?);
        connected.insert(url.to_string(), backend.clone());
        Ok(backend)
    }
}
