//! SQL mailbox backend (SQLite and PostgreSQL).
//!
//! Accounts live in one table, `mailboxes`, shaped for what a self-hosted Dovecot + Postfix stack
//! reads: Dovecot's `sql` passdb/userdb and Postfix's `pgsql:`/`sqlite:` lookup tables query it
//! directly (see `docs/sql-schema.md` for the queries). The same DDL and the same statements are
//! used on both databases through sqlx's `Any` driver; booleans are stored as `INTEGER` 0/1 so the
//! mail servers' queries (`active = 1`) are identical on both.
//!
//! Disabled accounts keep their row (`active = 0`) and their mail on disk; the documented queries
//! make them invisible to Dovecot (no login, no lookup) and to Postfix (recipient rejected).
//!
//! Every row records its `owner`, an opaque label of whoever manages it. A row without one (left
//! by an earlier mail system, or released) is adopted by the first account that wants its address,
//! so that mail survives a change of account id.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

use super::{
    Account, BackendError, Change, DesiredAccount, DesiredList, Ensured, ErrorKind, List, MailboxBackend, Result,
};

/// How long an operation waits for a pooled connection (including connecting) before failing
/// with a transient error. Bounded so that a dead database fails fast instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_CONNECTIONS: u32 = 5;

/// The schema, one statement per entry, run at every connect (each is idempotent). The same text
/// runs on SQLite and PostgreSQL.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS mailboxes (
    account_id   TEXT    NOT NULL PRIMARY KEY,
    address      TEXT    NOT NULL UNIQUE,
    local_part   TEXT    NOT NULL,
    domain       TEXT    NOT NULL,
    display_name TEXT,
    active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    maildir      TEXT    NOT NULL UNIQUE,
    quota_bytes  BIGINT,
    password     TEXT,
    created_at   TEXT,
    updated_at   TEXT,
    owner        TEXT
)",
    "CREATE INDEX IF NOT EXISTS mailboxes_domain ON mailboxes (domain)",
    "CREATE TABLE IF NOT EXISTS lists (
    list_id      TEXT NOT NULL PRIMARY KEY,
    address      TEXT NOT NULL UNIQUE,
    display_name TEXT,
    created_at   TEXT,
    updated_at   TEXT
)",
    "CREATE TABLE IF NOT EXISTS list_members (
    list_id    TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (list_id, account_id)
)",
    "CREATE INDEX IF NOT EXISTS list_members_account ON list_members (account_id)",
    "CREATE TABLE IF NOT EXISTS aliases (
    address    TEXT NOT NULL PRIMARY KEY,
    account_id TEXT NOT NULL,
    created_at TEXT
)",
    "CREATE INDEX IF NOT EXISTS aliases_account ON aliases (account_id)",
];

/// Columns that tables created by earlier versions lack: a probe that fails while the column is
/// missing, and the statement that adds it. Probing, because SQLite has no `ADD COLUMN IF NOT
/// EXISTS`.
const UPGRADES: &[(&str, &str)] =
    &[("SELECT owner FROM mailboxes WHERE 1 = 0", "ALTER TABLE mailboxes ADD COLUMN owner TEXT")];

/// Rows per multi-row INSERT of list members (well below SQLite's bound-parameter limit).
const MEMBER_BATCH: usize = 400;

/// The `mailboxes` columns an [`Account`] is made of.
const ACCOUNT_COLUMNS: &str = "account_id, address, local_part, domain, display_name, active, quota_bytes, owner";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Sqlite,
    Postgres,
}

/// Mailbox accounts in a SQL table, on SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct SqlBackend {
    pool: AnyPool,
    flavor: Flavor,
}

impl SqlBackend {
    /// Connects to the database at `url` and creates the schema if it is missing.
    ///
    /// Accepted URLs:
    /// - PostgreSQL: `postgres://user:password@host:port/dbname` (or `postgresql://`), with any of
    ///   the usual libpq-style query parameters sqlx understands (`sslmode=...`).
    /// - SQLite, absolute path: `sqlite:///var/lib/cleanmail/mailboxes.db` or
    ///   `sqlite:/var/lib/cleanmail/mailboxes.db`.
    /// - SQLite, path relative to the working directory: `sqlite://mailboxes.db` or
    ///   `sqlite:mailboxes.db`.
    ///
    /// For SQLite the file is created when missing (`mode=rwc` is added unless the URL already
    /// says `mode=`); its directory must exist. In-memory SQLite databases are refused: every
    /// pooled connection would see a different, empty database and no mail server could read it.
    ///
    /// A database that cannot be reached fails with a [`ErrorKind::Transient`] error within a few
    /// seconds; a malformed or unsupported URL fails with [`ErrorKind::Permanent`].
    pub async fn connect(url: &str) -> Result<SqlBackend> {
        sqlx::any::install_default_drivers();

        let (flavor, url) = normalize_url(url)?;
        let options = AnyConnectOptions::from_str(&url).map_err(|e| BackendError {
            kind: ErrorKind::Permanent,
            operation: "connect",
            account_id: String::new(),
            message: format!("invalid database URL: {e}"),
            source: Some(Box::new(e)),
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| db_error("connect", "", e))?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await.map_err(|e| db_error("create schema", "", e))?;
        }
        for (probe, upgrade) in UPGRADES {
            add_missing_column(&pool, probe, upgrade).await?;
        }
        Ok(SqlBackend { pool, flavor })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether this backend talks to PostgreSQL (otherwise SQLite).
    pub fn is_postgres(&self) -> bool {
        self.flavor == Flavor::Postgres
    }

    /// The account's row and aliases, if it exists.
    async fn stored(&self, operation: &'static str, account_id: &str) -> Result<Option<StoredRow>> {
        let fail = |e| db_error(operation, account_id, e);
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM mailboxes WHERE account_id = $1"))
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(fail)?;
        let Some(row) = row else { return Ok(None) };
        let mut stored = StoredRow::decode(&row).map_err(fail)?;
        stored.aliases = sqlx::query_scalar("SELECT address FROM aliases WHERE account_id = $1")
            .bind(account_id)
            .fetch_all(&self.pool)
            .await
            .map_err(fail)?;
        // In Rust rather than SQL: PostgreSQL's collation may order differently from SQLite's.
        stored.aliases.sort();
        Ok(Some(stored))
    }

    /// The other accounts whose address is the wanted address or one of the wanted aliases.
    async fn mailbox_holders(&self, wanted: &Wanted) -> Result<Vec<Holder>> {
        let addresses = wanted.addresses();
        let sql = format!(
            "SELECT address, account_id, owner FROM mailboxes WHERE account_id <> $1 AND address IN ({})",
            placeholders(2, addresses.len())
        );
        let mut query = sqlx::query(&sql).bind(&wanted.account_id);
        for address in &addresses {
            query = query.bind(*address);
        }
        let fail = |e| db_error("ensure", &wanted.account_id, e);
        let rows = query.fetch_all(&self.pool).await.map_err(fail)?;
        rows.iter()
            .map(|row| {
                Ok(Holder {
                    address: row.try_get("address")?,
                    account_id: row.try_get("account_id")?,
                    owner: row.try_get("owner")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(fail)
    }

    /// Aliases of accounts other than the wanted one (and the one it adopts) that are the wanted
    /// address or one of the wanted aliases, as (address, account id).
    async fn alias_holders(&self, wanted: &Wanted, adopted: Option<&str>) -> Result<Vec<(String, String)>> {
        let addresses = wanted.addresses();
        let sql = format!(
            "SELECT address, account_id FROM aliases WHERE account_id <> $1 AND account_id <> $2 AND address IN ({})",
            placeholders(3, addresses.len())
        );
        let id = wanted.account_id.as_str();
        let mut query = sqlx::query_as(&sql).bind(id).bind(adopted.unwrap_or(id));
        for address in &addresses {
            query = query.bind(*address);
        }
        query.fetch_all(&self.pool).await.map_err(|e| db_error("ensure", id, e))
    }

    /// Lists whose address is the wanted address or one of the wanted aliases, as (address, list id).
    async fn list_holders(&self, wanted: &Wanted) -> Result<Vec<(String, String)>> {
        let addresses = wanted.addresses();
        let sql = format!("SELECT address, list_id FROM lists WHERE address IN ({})", placeholders(1, addresses.len()));
        let mut query = sqlx::query_as(&sql);
        for address in addresses {
            query = query.bind(address);
        }
        query.fetch_all(&self.pool).await.map_err(|e| db_error("ensure", &wanted.account_id, e))
    }

    /// The conflict that keeps the wanted addresses from being this account's alone, if any; a
    /// mailbox holding the account's own address is left to the caller, who may adopt it.
    ///
    /// Only the address itself and an alias are unique in the database, across tables nothing
    /// is: two accounts written at the same instant may still both pass. The next `ensure` of
    /// either then reports the conflict.
    async fn conflict(
        &self,
        wanted: &Wanted,
        holders: &[Holder],
        adopted: Option<&str>,
    ) -> Result<Option<BackendError>> {
        let id = wanted.account_id.as_str();
        if let Some(holder) = holders.iter().find(|h| h.address != wanted.address.address) {
            let message = format!("alias {} is already used by account {}", holder.address, holder.account_id);
            return Ok(Some(permanent("ensure", id, message)));
        }
        if let Some((address, holder)) = self.alias_holders(wanted, adopted).await?.into_iter().next() {
            let what = if address == wanted.address.address { "address" } else { "alias" };
            let message = format!("{what} {address} is already an alias of account {holder}");
            return Ok(Some(permanent("ensure", id, message)));
        }
        if let Some((address, list)) = self.list_holders(wanted).await?.into_iter().next() {
            let what = if address == wanted.address.address { "address" } else { "alias" };
            let message = format!("{what} {address} is already used by list {list}");
            return Ok(Some(permanent("ensure", id, message)));
        }
        Ok(None)
    }

    /// Why a write failed when a concurrent writer got there first: either an address is now
    /// someone else's, or the row changed or took the same maildir since it was read (a retry then
    /// sees the new state and picks another maildir).
    async fn explain_race(&self, wanted: &Wanted, adopted: Option<&str>, err: Option<sqlx::Error>) -> BackendError {
        let holders = match self.mailbox_holders(wanted).await {
            Ok(holders) => holders,
            Err(e) => return e,
        };
        let own = holders.iter().find(|h| h.address == wanted.address.address);
        if let Some(holder) = own.filter(|h| Some(h.account_id.as_str()) != adopted) {
            return address_conflict(&wanted.account_id, &wanted.address.address, &holder.account_id);
        }
        match self.conflict(wanted, &holders, adopted).await {
            Ok(Some(conflict)) => conflict,
            Ok(None) => {
                let message = "the account changed while it was being written; a retry will see the change".into();
                let source = err.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
                BackendError { source, ..transient("ensure", &wanted.account_id, message) }
            }
            Err(e) => e,
        }
    }

    async fn maildir_taken(&self, account_id: &str, maildir: &str) -> Result<bool> {
        let taken: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM mailboxes WHERE maildir = $1 AND account_id <> $2")
                .bind(maildir)
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_error("ensure", account_id, e))?;
        Ok(taken.is_some())
    }

    /// `<domain>/<local part>/`, or `<domain>/<local part>.<account id>/` when that directory
    /// already belongs to another row, e.g. to an account renamed away from this address.
    async fn new_maildir(&self, wanted: &Wanted) -> Result<String> {
        let ParsedAddress { local_part, domain, .. } = &wanted.address;
        let maildir = format!("{domain}/{local_part}/");
        if !self.maildir_taken(&wanted.account_id, &maildir).await? {
            return Ok(maildir);
        }
        Ok(format!("{domain}/{local_part}.{}/", path_safe(&wanted.account_id)))
    }

    /// Writes the row and makes its aliases exact, in one transaction.
    async fn write(&self, wanted: &Wanted, change: &Change) -> Result<()> {
        let id = wanted.account_id.as_str();
        let maildir = match change {
            Change::Created => Some(self.new_maildir(wanted).await?),
            _ => None,
        };
        let adopted = adopted_from(change);
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await.map_err(|e| db_error("ensure", id, e))?;
        let written = match (adopted, maildir) {
            (Some(previous), _) => adopt_row(&mut tx, wanted, previous, &now).await,
            (None, Some(maildir)) => insert_row(&mut tx, wanted, &maildir, &now).await,
            (None, None) => update_row(&mut tx, wanted, &now).await,
        };
        let written = match written {
            Ok(true) => sync_aliases(&mut tx, id, &wanted.aliases, &now).await.map(|()| true),
            other => other,
        };
        match written {
            Ok(true) => tx.commit().await.map_err(|e| db_error("ensure", id, e)),
            Ok(false) => {
                // The explanation reads on other connections; they must not wait for this one.
                let _ = tx.rollback().await;
                Err(self.explain_race(wanted, adopted, None).await)
            }
            Err(e) if is_unique_violation(&e) => {
                let _ = tx.rollback().await;
                Err(self.explain_race(wanted, adopted, Some(e)).await)
            }
            Err(e) => Err(db_error("ensure", id, e)),
        }
    }
}

/// Adds a column an older table lacks. Two operators connecting at once may both try: the
/// loser's ALTER fails, and probing again shows the column is there after all.
async fn add_missing_column(pool: &AnyPool, probe: &str, upgrade: &str) -> Result<()> {
    if sqlx::query(probe).execute(pool).await.is_ok() {
        return Ok(());
    }
    let Err(err) = sqlx::query(upgrade).execute(pool).await else {
        return Ok(());
    };
    if sqlx::query(probe).execute(pool).await.is_ok() {
        return Ok(());
    }
    Err(db_error("upgrade schema", "", err))
}

/// Inserts the row. An upsert, so that a row created concurrently since it was found missing is
/// updated (keeping its maildir and created_at) rather than failing.
async fn insert_row(
    conn: &mut AnyConnection,
    wanted: &Wanted,
    maildir: &str,
    now: &str,
) -> std::result::Result<bool, sqlx::Error> {
    let ParsedAddress { address, local_part, domain } = &wanted.address;
    sqlx::query(
        "INSERT INTO mailboxes (account_id, address, local_part, domain, display_name, active, maildir, \
         quota_bytes, owner, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (account_id) DO UPDATE SET address = excluded.address, \
         local_part = excluded.local_part, domain = excluded.domain, display_name = excluded.display_name, \
         active = excluded.active, quota_bytes = excluded.quota_bytes, owner = excluded.owner, \
         updated_at = excluded.updated_at",
    )
    .bind(&wanted.account_id)
    .bind(address)
    .bind(local_part)
    .bind(domain)
    .bind(wanted.display_name.as_deref())
    .bind(i32::from(wanted.active))
    .bind(maildir)
    .bind(wanted.quota_bytes)
    .bind(&wanted.owner)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Brings the row to what is wanted, never touching its maildir; false when the row is gone.
async fn update_row(conn: &mut AnyConnection, wanted: &Wanted, now: &str) -> std::result::Result<bool, sqlx::Error> {
    set_row(conn, wanted, &wanted.account_id, "", now).await
}

/// Writes every wanted column into the row keyed `from`, re-keying it to the wanted account id
/// and leaving its maildir, password and created_at alone; `condition` narrows the rows that
/// qualify (`$9` is the wanted owner). False when no row qualified.
async fn set_row(
    conn: &mut AnyConnection,
    wanted: &Wanted,
    from: &str,
    condition: &str,
    now: &str,
) -> std::result::Result<bool, sqlx::Error> {
    let ParsedAddress { address, local_part, domain } = &wanted.address;
    let sql = format!(
        "UPDATE mailboxes SET account_id = $1, address = $3, local_part = $4, domain = $5, display_name = $6, \
         active = $7, quota_bytes = $8, owner = $9, updated_at = $10 WHERE account_id = $2{condition}"
    );
    let done = sqlx::query(&sql)
        .bind(&wanted.account_id)
        .bind(from)
        .bind(address)
        .bind(local_part)
        .bind(domain)
        .bind(wanted.display_name.as_deref())
        .bind(i32::from(wanted.active))
        .bind(wanted.quota_bytes)
        .bind(&wanted.owner)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Re-keys the row of `previous` to the wanted account, keeping its maildir, password and
/// created_at, and moves its aliases and list memberships along so that none is left pointing at
/// the old id. False when the row is no longer there to adopt: the ownership test is part of
/// the UPDATE, so of two concurrent adopters only one can win.
async fn adopt_row(
    conn: &mut AnyConnection,
    wanted: &Wanted,
    previous: &str,
    now: &str,
) -> std::result::Result<bool, sqlx::Error> {
    let id = wanted.account_id.as_str();
    if !set_row(&mut *conn, wanted, previous, " AND (owner IS NULL OR owner = $9)", now).await? {
        return Ok(false);
    }
    // A list may already name the new id (lists accept members without an account yet); the
    // primary key allows only one of the two memberships.
    let statements = [
        "UPDATE aliases SET account_id = $1 WHERE account_id = $2",
        "DELETE FROM list_members WHERE account_id = $2 \
         AND list_id IN (SELECT list_id FROM list_members WHERE account_id = $1)",
        "UPDATE list_members SET account_id = $1 WHERE account_id = $2",
    ];
    for statement in statements {
        sqlx::query(statement).bind(id).bind(previous).execute(&mut *conn).await?;
    }
    Ok(true)
}

/// Makes the account's aliases exactly `wanted`, touching only those that change.
async fn sync_aliases(
    conn: &mut AnyConnection,
    account_id: &str,
    wanted: &[String],
    now: &str,
) -> std::result::Result<(), sqlx::Error> {
    let current: Vec<String> = sqlx::query_scalar("SELECT address FROM aliases WHERE account_id = $1")
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?;
    let wanted: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let current: BTreeSet<&str> = current.iter().map(String::as_str).collect();
    for gone in current.difference(&wanted) {
        sqlx::query("DELETE FROM aliases WHERE address = $1 AND account_id = $2")
            .bind(*gone)
            .bind(account_id)
            .execute(&mut *conn)
            .await?;
    }
    let added: Vec<&str> = wanted.difference(&current).copied().collect();
    for batch in added.chunks(MEMBER_BATCH) {
        let values: Vec<String> = (0..batch.len()).map(|i| format!("(${}, $1, $2)", i + 3)).collect();
        let sql = format!("INSERT INTO aliases (address, account_id, created_at) VALUES {}", values.join(", "));
        let mut insert = sqlx::query(&sql).bind(account_id).bind(now);
        for alias in batch {
            insert = insert.bind(*alias);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

fn adopted_from(change: &Change) -> Option<&str> {
    match change {
        Change::Adopted { previous_account_id } => Some(previous_account_id),
        _ => None,
    }
}

/// `$first, $first+1, ...`: `count` numbered parameters for an `IN (...)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

fn permanent(operation: &'static str, account_id: &str, message: String) -> BackendError {
    BackendError { kind: ErrorKind::Permanent, operation, account_id: account_id.to_owned(), message, source: None }
}

fn transient(operation: &'static str, account_id: &str, message: String) -> BackendError {
    BackendError { kind: ErrorKind::Transient, ..permanent(operation, account_id, message) }
}

fn address_conflict(account_id: &str, address: &str, holder: &str) -> BackendError {
    permanent("ensure", account_id, format!("address {address} is already used by account {holder}"))
}

/// `DesiredAccount`, validated and in the form it is stored in.
struct Wanted {
    account_id: String,
    address: ParsedAddress,
    display_name: Option<String>,
    active: bool,
    quota_bytes: Option<i64>,
    /// Sorted, without duplicates and without the account's own address.
    aliases: Vec<String>,
    owner: String,
}

impl Wanted {
    fn new(desired: &DesiredAccount) -> Result<Wanted> {
        let invalid = |message: String| permanent("ensure", &desired.account_id, message);
        if desired.account_id.is_empty() {
            return Err(invalid("empty account id".into()));
        }
        // An empty label could never be told apart from another empty label, so any such
        // account could adopt any other's row.
        if desired.owner.is_empty() {
            return Err(invalid("empty owner".into()));
        }
        if let Some(quota) = desired.quota_bytes.filter(|q| *q < 0) {
            return Err(invalid(format!("negative quota {quota}")));
        }
        let address = ParsedAddress::parse(&desired.address).map_err(invalid)?;
        let mut aliases = BTreeSet::new();
        for alias in &desired.aliases {
            let alias = ParsedAddress::parse(alias).map_err(|message| invalid(format!("alias: {message}")))?;
            if alias.address != address.address {
                aliases.insert(alias.address);
            }
        }
        Ok(Wanted {
            account_id: desired.account_id.clone(),
            address,
            display_name: desired.display_name.clone(),
            active: desired.enabled,
            quota_bytes: desired.quota_bytes,
            aliases: aliases.into_iter().collect(),
            owner: desired.owner.clone(),
        })
    }

    /// The account's own address first, then its aliases.
    fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.address.address.as_str()).chain(self.aliases.iter().map(String::as_str)).collect()
    }

    /// What must happen given the account's row, if any, and the other account holding the wanted
    /// address, if any.
    fn change(&self, current: Option<&StoredRow>, holder: Option<&Holder>) -> Result<Change> {
        match (holder, current) {
            (Some(holder), None) if holder.owner.as_deref().is_none_or(|owner| owner == self.owner) => {
                Ok(Change::Adopted { previous_account_id: holder.account_id.clone() })
            }
            (Some(holder), _) => Err(address_conflict(&self.account_id, &self.address.address, &holder.account_id)),
            (None, None) => Ok(Change::Created),
            (None, Some(stored)) if self.matches(stored) => Ok(Change::Unchanged),
            (None, Some(_)) => Ok(Change::Updated),
        }
    }

    fn matches(&self, stored: &StoredRow) -> bool {
        stored.address == self.address.address
            && stored.local_part == self.address.local_part
            && stored.domain == self.address.domain
            && stored.display_name == self.display_name
            && stored.active == self.active
            && stored.quota_bytes == self.quota_bytes
            && stored.owner.as_deref() == Some(self.owner.as_str())
            && stored.aliases == self.aliases
    }

    fn account(&self) -> Account {
        Account {
            account_id: self.account_id.clone(),
            address: self.address.address.clone(),
            display_name: self.display_name.clone(),
            enabled: self.active,
            quota_bytes: self.quota_bytes,
            aliases: self.aliases.clone(),
            owner: Some(self.owner.clone()),
        }
    }
}

/// Another account's row holding one of the wanted addresses.
struct Holder {
    address: String,
    account_id: String,
    owner: Option<String>,
}

/// What `ensure` compares against the desired state.
struct StoredRow {
    account_id: String,
    address: String,
    local_part: String,
    domain: String,
    display_name: Option<String>,
    active: bool,
    quota_bytes: Option<i64>,
    owner: Option<String>,
    /// Sorted.
    aliases: Vec<String>,
}

impl StoredRow {
    /// Decodes the [`ACCOUNT_COLUMNS`] of a row; the aliases are left to the caller.
    fn decode(row: &sqlx::any::AnyRow) -> std::result::Result<StoredRow, sqlx::Error> {
        Ok(StoredRow {
            account_id: row.try_get("account_id")?,
            address: row.try_get("address")?,
            local_part: row.try_get("local_part")?,
            domain: row.try_get("domain")?,
            display_name: row.try_get("display_name")?,
            active: row.try_get::<i64, _>("active")? != 0,
            quota_bytes: row.try_get("quota_bytes")?,
            owner: row.try_get("owner")?,
            aliases: Vec::new(),
        })
    }

    fn account(self) -> Account {
        Account {
            account_id: self.account_id,
            address: self.address,
            display_name: self.display_name,
            enabled: self.active,
            quota_bytes: self.quota_bytes,
            aliases: self.aliases,
            owner: self.owner,
        }
    }
}

#[async_trait]
impl MailboxBackend for SqlBackend {
    /// Creates, adopts or updates the row keyed by `account_id`, and makes its aliases exact.
    ///
    /// The maildir is chosen once, at creation (see [`SqlBackend::new_maildir`]). A later rename
    /// changes `address`, `local_part` and `domain` but never `maildir`: the mail stays where it
    /// is and mail servers find it through the new address. An adopted row keeps its maildir too.
    async fn ensure(&self, desired: &DesiredAccount) -> Result<Ensured> {
        let wanted = Wanted::new(desired)?;
        let current = self.stored("ensure", &wanted.account_id).await?;
        let holders = self.mailbox_holders(&wanted).await?;
        let holder = holders.iter().find(|h| h.address == wanted.address.address);
        let change = wanted.change(current.as_ref(), holder)?;
        let adopted = adopted_from(&change);
        if let Some(conflict) = self.conflict(&wanted, &holders, adopted).await? {
            return Err(conflict);
        }
        if change != Change::Unchanged {
            self.write(&wanted, &change).await?;
        }
        Ok(Ensured { account: wanted.account(), change })
    }

    async fn disable(&self, account_id: &str) -> Result<()> {
        sqlx::query("UPDATE mailboxes SET active = 0, updated_at = $2 WHERE account_id = $1 AND active <> 0")
            .bind(account_id)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("disable", account_id, e))?;
        Ok(())
    }

    /// Aliases are kept: while the account stays active it keeps receiving at them.
    async fn release(&self, account_id: &str, disable: bool) -> Result<()> {
        // The conditions keep a repeated release from touching updated_at.
        let statement = if disable {
            "UPDATE mailboxes SET owner = NULL, active = 0, updated_at = $2 \
             WHERE account_id = $1 AND (owner IS NOT NULL OR active <> 0)"
        } else {
            "UPDATE mailboxes SET owner = NULL, updated_at = $2 WHERE account_id = $1 AND owner IS NOT NULL"
        };
        sqlx::query(statement)
            .bind(account_id)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("release", account_id, e))?;
        Ok(())
    }

    /// Removes the row, its aliases and its list memberships, so that nothing points at it.
    async fn delete(&self, account_id: &str) -> Result<()> {
        let fail = |e: sqlx::Error| db_error("delete", account_id, e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        for statement in [
            "DELETE FROM mailboxes WHERE account_id = $1",
            "DELETE FROM aliases WHERE account_id = $1",
            "DELETE FROM list_members WHERE account_id = $1",
        ] {
            sqlx::query(statement).bind(account_id).execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }

    async fn get(&self, account_id: &str) -> Result<Option<Account>> {
        Ok(self.stored("get", account_id).await?.map(StoredRow::account))
    }

    /// Two queries whatever the number of accounts: the rows, then all their aliases. Sorted in
    /// Rust, so that the order is bytewise on both databases whatever their collation.
    async fn accounts_in(&self, domains: &[String]) -> Result<Vec<Account>> {
        let fail = |e| db_error("list accounts", "", e);
        let domains: BTreeSet<String> = domains.iter().map(|d| d.trim().to_ascii_lowercase()).collect();
        if domains.is_empty() {
            return Ok(Vec::new());
        }
        let within = placeholders(1, domains.len());
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM mailboxes WHERE lower(domain) IN ({within})");
        let mut query = sqlx::query(&sql);
        for domain in &domains {
            query = query.bind(domain.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(fail)?;
        let sql = format!(
            "SELECT a.account_id, a.address FROM aliases a JOIN mailboxes m ON m.account_id = a.account_id \
             WHERE lower(m.domain) IN ({within})"
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for domain in &domains {
            query = query.bind(domain.as_str());
        }
        let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
        for (account_id, alias) in query.fetch_all(&self.pool).await.map_err(fail)? {
            aliases.entry(account_id).or_default().push(alias);
        }
        let mut accounts = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut stored = StoredRow::decode(row).map_err(fail)?;
            stored.aliases = aliases.remove(&stored.account_id).unwrap_or_default();
            stored.aliases.sort();
            accounts.push(stored.account());
        }
        accounts.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(accounts)
    }

    /// Upserts the `lists` row and makes `list_members` exactly the desired set, in one
    /// transaction, touching only the memberships that change.
    async fn ensure_list(&self, desired: &DesiredList) -> Result<List> {
        let list_id = desired.list_id.as_str();
        let fail = |e: sqlx::Error| db_error("ensure list", list_id, e);
        let permanent = |message: String| BackendError {
            kind: ErrorKind::Permanent,
            operation: "ensure list",
            account_id: list_id.to_owned(),
            message,
            source: None,
        };
        let address = ParsedAddress::parse(&desired.address).map_err(permanent)?.address;
        let list_owner: Option<String> =
            sqlx::query_scalar("SELECT list_id FROM lists WHERE address = $1 AND list_id <> $2")
                .bind(&address)
                .bind(list_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(fail)?;
        let mailbox_owner: Option<String> = sqlx::query_scalar("SELECT account_id FROM mailboxes WHERE address = $1")
            .bind(&address)
            .fetch_optional(&self.pool)
            .await
            .map_err(fail)?;
        if let Some(owner) = list_owner.or(mailbox_owner) {
            return Err(permanent(format!("address {address} is already used by {owner}")));
        }
        let alias_owner: Option<String> = sqlx::query_scalar("SELECT account_id FROM aliases WHERE address = $1")
            .bind(&address)
            .fetch_optional(&self.pool)
            .await
            .map_err(fail)?;
        if let Some(owner) = alias_owner {
            return Err(permanent(format!("address {address} is already an alias of account {owner}")));
        }

        let wanted: std::collections::BTreeSet<&str> = desired.member_account_ids.iter().map(String::as_str).collect();
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await.map_err(fail)?;
        sqlx::query(
            "INSERT INTO lists (list_id, address, display_name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (list_id) DO UPDATE SET address = excluded.address, \
             display_name = excluded.display_name, updated_at = excluded.updated_at",
        )
        .bind(list_id)
        .bind(&address)
        .bind(desired.display_name.as_deref())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        let current: Vec<String> = sqlx::query_scalar("SELECT account_id FROM list_members WHERE list_id = $1")
            .bind(list_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
        let current: std::collections::BTreeSet<&str> = current.iter().map(String::as_str).collect();
        for gone in current.difference(&wanted) {
            sqlx::query("DELETE FROM list_members WHERE list_id = $1 AND account_id = $2")
                .bind(list_id)
                .bind(*gone)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        let added: Vec<&str> = wanted.difference(&current).copied().collect();
        for batch in added.chunks(MEMBER_BATCH) {
            let values: Vec<String> = (0..batch.len()).map(|i| format!("($1, ${})", i + 2)).collect();
            let sql = format!("INSERT INTO list_members (list_id, account_id) VALUES {}", values.join(", "));
            let mut insert = sqlx::query(&sql).bind(list_id);
            for account_id in batch {
                insert = insert.bind(*account_id);
            }
            insert.execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(List {
            list_id: list_id.to_owned(),
            address,
            display_name: desired.display_name.clone(),
            member_count: wanted.len(),
        })
    }

    async fn delete_list(&self, list_id: &str) -> Result<()> {
        let fail = |e: sqlx::Error| db_error("delete list", list_id, e);
        let mut tx = self.pool.begin().await.map_err(fail)?;
        for statement in ["DELETE FROM list_members WHERE list_id = $1", "DELETE FROM lists WHERE list_id = $1"] {
            sqlx::query(statement).bind(list_id).execute(&mut *tx).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }
}

/// Splits off the database kind and makes SQLite URLs create their file.
fn normalize_url(url: &str) -> Result<(Flavor, String)> {
    let url = url.trim();
    let permanent = |message: String| BackendError {
        kind: ErrorKind::Permanent,
        operation: "connect",
        account_id: String::new(),
        message,
        source: None,
    };
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok((Flavor::Postgres, url.to_owned())),
        Some("sqlite") => {
            let (path, query) = match url.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (url, None),
            };
            let file = path.trim_start_matches("sqlite:").trim_start_matches("//");
            let memory = file.is_empty()
                || file == ":memory:"
                || query.is_some_and(|q| q.split('&').any(|kv| kv == "mode=memory"));
            if memory {
                return Err(permanent("in-memory SQLite databases are not supported: give a file path".into()));
            }
            // Relative paths are resolved against the working directory here, because the URL
            // parser below would fold `..` segments of `sqlite://../x` into the host name.
            let mut url = if file.starts_with('/') {
                format!("sqlite://{file}")
            } else {
                let cwd = std::env::current_dir()
                    .map_err(|e| permanent(format!("cannot resolve relative SQLite path {file:?}: {e}")))?;
                let cwd = cwd.to_str().ok_or_else(|| permanent("the working directory is not valid UTF-8".into()))?;
                format!("sqlite://{}/{file}", percent_encode_path(cwd.trim_end_matches('/')))
            };
            if let Some(q) = query {
                url.push('?');
                url.push_str(q);
            }
            match query {
                Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => {}
                Some("") => url.push_str("mode=rwc"),
                Some(_) => url.push_str("&mode=rwc"),
                None => url.push_str("?mode=rwc"),
            }
            Ok((Flavor::Sqlite, url))
        }
        Some(other) => Err(permanent(format!("unsupported database URL scheme {other:?}: use postgres:// or sqlite:"))),
        None => Err(permanent("invalid database URL: no scheme".into())),
    }
}

/// Escapes what would end or corrupt the path part of a URL.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'%' | b'?' | b'#' | b' ' | 0..=0x1f | 0x7f..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// A validated, lower-cased mail address.
#[derive(Debug, PartialEq, Eq)]
struct ParsedAddress {
    address: String,
    local_part: String,
    domain: String,
}

impl ParsedAddress {
    /// Accepts plain ASCII addresses whose parts are safe as directory names: the local part is
    /// a dot-atom without `/`, `\` or `%` (which would break maildir paths or mail-server
    /// variable expansion), the domain a host name.
    fn parse(raw: &str) -> std::result::Result<ParsedAddress, String> {
        let address = raw.trim().to_ascii_lowercase();
        let invalid = |why: &str| format!("invalid address {address:?}: {why}");
        if !address.is_ascii() {
            return Err(invalid("only ASCII addresses are supported"));
        }
        let Some((local, domain)) = address.split_once('@') else {
            return Err(invalid("no @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("local part must have 1 to 64 characters"));
        }
        const LOCAL_SPECIALS: &str = "!#$&'*+-=?^_`{|}~.";
        if let Some(c) = local.chars().find(|c| !(c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(*c))) {
            return Err(invalid(&format!("character {c:?} is not supported in the local part")));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid("misplaced dot in the local part"));
        }
        if domain.is_empty() || domain.len() > 253 {
            return Err(invalid("domain must have 1 to 253 characters"));
        }
        for label in domain.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(invalid("domain is not a valid host name"));
            }
        }
        Ok(ParsedAddress { local_part: local.to_owned(), domain: domain.to_owned(), address: address.clone() })
    }
}

/// The characters of an account id that are safe in a directory name.
fn path_safe(account_id: &str) -> String {
    account_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(64).collect()
}

/// Wraps a database error, deciding whether a retry can help.
fn db_error(operation: &'static str, account_id: &str, err: sqlx::Error) -> BackendError {
    BackendError {
        kind: classify(&err),
        operation,
        account_id: account_id.to_owned(),
        message: match err {
            sqlx::Error::PoolTimedOut => {
                format!("database unreachable: no connection within {} s ({err})", ACQUIRE_TIMEOUT.as_secs())
            }
            _ => err.to_string(),
        },
        source: Some(Box::new(err)),
    }
}

/// Connection, I/O, pool and server-side resource problems are transient. Requests the database
/// rejects for their content (constraint violations, invalid data) and bad configuration are
/// permanent. Other server errors (permissions, missing objects, authentication) are treated as
/// transient: they are fixed by an administrator, not by changing the desired account, so the
/// caller should keep retrying with backoff.
fn classify(err: &sqlx::Error) -> ErrorKind {
    use sqlx::Error as E;
    match err {
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            ErrorKind::Transient
        }
        E::Database(db) => {
            if db.kind() != sqlx::error::ErrorKind::Other {
                return ErrorKind::Permanent;
            }
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Primary result code = low byte of the extended code.
                match code.parse::<i64>().map(|c| c & 0xff) {
                    // SQLITE_CONSTRAINT, SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE
                    Ok(19 | 18 | 20 | 25) => ErrorKind::Permanent,
                    _ => ErrorKind::Transient,
                }
            } else if code.starts_with("22") || code.starts_with("23") {
                // PostgreSQL SQLSTATE classes: data exception, integrity constraint violation.
                ErrorKind::Permanent
            } else {
                ErrorKind::Transient
            }
        }
        _ => ErrorKind::Permanent,
    }
}

/// The current time as RFC 3339 UTC with millisecond precision, e.g. `2025-01-31T08:15:00.123Z`.
fn now_rfc3339() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_rfc3339(since.as_secs() as i64, since.subsec_millis())
}

fn format_rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct TempDb {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    fn temp_db() -> TempDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailboxes.db");
        TempDb { _dir: dir, path }
    }

    async fn backend(db: &TempDb) -> SqlBackend {
        SqlBackend::connect(&format!("sqlite://{}", db.path.display())).await.unwrap()
    }

    fn desired(id: &str, address: &str, enabled: bool) -> DesiredAccount {
        DesiredAccount {
            account_id: id.into(),
            address: address.into(),
            display_name: Some("Alice Example".into()),
            enabled,
            quota_bytes: None,
            aliases: vec![],
            owner: "contoso/alice".into(),
        }
    }

    async fn column(b: &SqlBackend, id: &str, col: &str) -> Option<String> {
        sqlx::query_scalar(&format!("SELECT CAST({col} AS TEXT) FROM mailboxes WHERE account_id = $1"))
            .bind(id)
            .fetch_optional(&b.pool)
            .await
            .unwrap()
            .flatten()
    }

    #[tokio::test]
    async fn ensure_creates_the_account() {
        let db = temp_db();
        let b = backend(&db).await;
        let ensured = b.ensure(&desired("id-1", " Alice@Contoso.CH ", true)).await.unwrap();
        assert_eq!(ensured.change, Change::Created);
        let got = ensured.account;
        assert_eq!(got.owner.as_deref(), Some("contoso/alice"));
        assert_eq!(got.address, "alice@contoso.ch");
        assert!(got.enabled);
        assert_eq!(b.get("id-1").await.unwrap(), Some(got));
        assert_eq!(column(&b, "id-1", "maildir").await.as_deref(), Some("contoso.ch/alice/"));
        assert_eq!(column(&b, "id-1", "local_part").await.as_deref(), Some("alice"));
        assert_eq!(column(&b, "id-1", "domain").await.as_deref(), Some("contoso.ch"));
        assert_eq!(column(&b, "id-1", "active").await.as_deref(), Some("1"));
        assert_eq!(column(&b, "id-1", "password").await, None);
        let created = column(&b, "id-1", "created_at").await.unwrap();
        assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    }

    #[tokio::test]
    async fn ensure_is_idempotent() {
        let db = temp_db();
        let b = backend(&db).await;
        let first = b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap().account;
        let stamp = column(&b, "id-1", "updated_at").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        assert_eq!(second.change, Change::Unchanged);
        assert_eq!(first, second.account);
        assert_eq!(column(&b, "id-1", "updated_at").await, stamp, "no write when unchanged");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailboxes").fetch_one(&b.pool).await.unwrap();
        assert_eq!(count, 1);
        // A changed display name is written.
        let mut d = desired("id-1", "alice@contoso.ch", true);
        d.display_name = None;
        let updated = b.ensure(&d).await.unwrap();
        assert_eq!(updated.change, Change::Updated);
        assert_eq!(updated.account.display_name, None);
        assert_eq!(b.get("id-1").await.unwrap().unwrap().display_name, None);
    }

    #[tokio::test]
    async fn schema_creation_is_idempotent() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        b.close().await;
        let again = backend(&db).await;
        assert!(again.get("id-1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn rename_keeps_the_maildir() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        let got = b.ensure(&desired("id-1", "alice.smith@fabrikam.ch", true)).await.unwrap().account;
        assert_eq!(got.address, "alice.smith@fabrikam.ch");
        assert_eq!(b.get("id-1").await.unwrap().unwrap().address, "alice.smith@fabrikam.ch");
        assert_eq!(column(&b, "id-1", "local_part").await.as_deref(), Some("alice.smith"));
        assert_eq!(column(&b, "id-1", "domain").await.as_deref(), Some("fabrikam.ch"));
        assert_eq!(column(&b, "id-1", "maildir").await.as_deref(), Some("contoso.ch/alice/"));

        // The freed address can go to someone else, who gets a maildir of their own.
        b.ensure(&desired("id-2", "alice@contoso.ch", true)).await.unwrap();
        assert_eq!(column(&b, "id-2", "maildir").await.as_deref(), Some("contoso.ch/alice.id-2/"));
    }

    #[tokio::test]
    async fn disable_keeps_the_row() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        b.disable("id-1").await.unwrap();
        let got = b.get("id-1").await.unwrap().unwrap();
        assert!(!got.enabled);
        assert_eq!(column(&b, "id-1", "active").await.as_deref(), Some("0"));
        b.disable("id-1").await.unwrap();
        b.disable("absent").await.unwrap();
        assert_eq!(b.get("absent").await.unwrap(), None);
        // Enabling again.
        assert!(b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap().account.enabled);
        assert!(b.get("id-1").await.unwrap().unwrap().enabled);
        // Creating disabled.
        let off = b.ensure(&desired("id-2", "bob@contoso.ch", false)).await.unwrap().account;
        assert!(!off.enabled);
        assert_eq!(column(&b, "id-2", "active").await.as_deref(), Some("0"));
    }

    #[tokio::test]
    async fn delete_removes_and_tolerates_absence() {
        let db = temp_db();
        let b = backend(&db).await;
        b.delete("absent").await.unwrap();
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        b.delete("id-1").await.unwrap();
        assert_eq!(b.get("id-1").await.unwrap(), None);
        b.delete("id-1").await.unwrap();
    }

    #[tokio::test]
    async fn address_conflict_is_permanent() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        let err = b.ensure(&owned_by(desired("id-2", "ALICE@contoso.ch", true), "contoso/alice2")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert_eq!(err.account_id, "id-2");
        assert!(err.message.contains("address alice@contoso.ch is already used by account id-1"), "{err}");
        // Also when an existing account is renamed onto a taken address.
        b.ensure(&desired("id-3", "bob@contoso.ch", true)).await.unwrap();
        let err = b.ensure(&desired("id-3", "alice@contoso.ch", true)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert_eq!(b.get("id-3").await.unwrap().unwrap().address, "bob@contoso.ch");
    }

    #[tokio::test]
    async fn unique_violation_on_write_is_explained() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        let err = sqlx::query(
            "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir) \
             VALUES ('x', 'alice@contoso.ch', 'alice', 'contoso.ch', 1, 'x/')",
        )
        .execute(&b.pool)
        .await
        .unwrap_err();
        let wanted = Wanted::new(&desired("x", "alice@contoso.ch", true)).unwrap();
        let err = b.explain_race(&wanted, None, Some(err)).await;
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("already used by account id-1"), "{err}");
    }

    #[tokio::test]
    async fn invalid_addresses_are_permanent() {
        let db = temp_db();
        let b = backend(&db).await;
        for bad in [
            "alice",
            "@contoso.ch",
            "alice@",
            "../x@contoso.ch",
            "a/b@contoso.ch",
            "a%b@contoso.ch",
            "alice@conto so.ch",
            "alice@-contoso.ch",
            "älice@contoso.ch",
            "a@b@contoso.ch",
        ] {
            let err = b.ensure(&desired("id-1", bad, true)).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Permanent, "{bad}");
        }
        assert_eq!(b.get("id-1").await.unwrap(), None);
        b.ensure(&desired("id-1", "o'brien+tag@mail.contoso.ch", true)).await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_url_forms() {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir.path().join("a.db");
        let abs = abs.to_str().unwrap();
        for url in [format!("sqlite://{abs}"), format!("sqlite:{abs}"), format!("sqlite://{abs}?")] {
            let b = SqlBackend::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!b.is_postgres());
            b.close().await;
        }
        assert!(std::path::Path::new(abs).exists());
        // Relative to the working directory, without changing it: climb to the root first.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count().saturating_sub(1));
        let rel = format!("{up}{}", dir.path().join("r.db").to_str().unwrap().trim_start_matches('/'));
        for url in [format!("sqlite://{rel}"), format!("sqlite:{rel}")] {
            SqlBackend::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(dir.path().join("r.db").exists());
    }

    #[tokio::test]
    async fn bad_urls_are_permanent() {
        for url in ["sqlite::memory:", "sqlite://?mode=memory", "mysql://localhost/x", "nonsense"] {
            let err = SqlBackend::connect(url).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Permanent, "{url}: {err}");
        }
        let err = SqlBackend::connect("sqlite:///tmp/x.db?mode=bogus").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    }

    #[tokio::test]
    async fn unreachable_postgres_is_transient_and_quick() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let started = Instant::now();
        let err = SqlBackend::connect(&format!("postgres://cleanmail@127.0.0.1:{port}/mail")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(format_rfc3339(1_738_311_300, 123), "2025-01-31T08:15:00.123Z");
    }

    async fn exec(b: &SqlBackend, sql: &str) {
        sqlx::query(sql).execute(&b.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A row as an earlier mail system (or an operator version without owners) left it.
    async fn insert_legacy(b: &SqlBackend, id: &str, address: &str, maildir: &str) {
        let (local, domain) = address.split_once('@').unwrap();
        exec(
            b,
            &format!(
                "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir, password, created_at) \
                 VALUES ('{id}', '{address}', '{local}', '{domain}', 1, '{maildir}', '{{PLAIN}}secret', \
                 '2020-01-01T00:00:00.000Z')"
            ),
        )
        .await;
    }

    fn with_aliases(mut d: DesiredAccount, aliases: &[&str]) -> DesiredAccount {
        d.aliases = aliases.iter().map(|a| a.to_string()).collect();
        d
    }

    fn owned_by(mut d: DesiredAccount, owner: &str) -> DesiredAccount {
        d.owner = owner.into();
        d
    }

    async fn alias_rows(b: &SqlBackend) -> Vec<(String, String)> {
        sqlx::query_as("SELECT address, account_id FROM aliases ORDER BY address").fetch_all(&b.pool).await.unwrap()
    }

    #[tokio::test]
    async fn quota_is_written_and_drift_is_restored() {
        let db = temp_db();
        let b = backend(&db).await;
        let d = DesiredAccount { quota_bytes: Some(1 << 30), ..desired("id-1", "alice@contoso.ch", true) };
        assert_eq!(b.ensure(&d).await.unwrap().account.quota_bytes, Some(1 << 30));
        assert_eq!(column(&b, "id-1", "quota_bytes").await.as_deref(), Some("1073741824"));

        exec(&b, "UPDATE mailboxes SET quota_bytes = 5, active = 0, display_name = 'x', owner = 'someone/else'").await;
        let repaired = b.ensure(&d).await.unwrap();
        assert_eq!(repaired.change, Change::Updated);
        let got = b.get("id-1").await.unwrap().unwrap();
        assert_eq!(got, repaired.account);
        assert_eq!((got.quota_bytes, got.enabled), (Some(1 << 30), true));
        assert_eq!(got.owner.as_deref(), Some("contoso/alice"));
        assert_eq!(b.ensure(&d).await.unwrap().change, Change::Unchanged);

        let unlimited = DesiredAccount { quota_bytes: None, ..d.clone() };
        assert_eq!(b.ensure(&unlimited).await.unwrap().change, Change::Updated);
        assert_eq!(column(&b, "id-1", "quota_bytes").await, None);

        let negative = DesiredAccount { quota_bytes: Some(-1), ..d };
        assert_eq!(b.ensure(&negative).await.unwrap_err().kind, ErrorKind::Permanent);
    }

    #[tokio::test]
    async fn aliases_are_kept_exact() {
        let db = temp_db();
        let b = backend(&db).await;
        let d = with_aliases(
            desired("id-1", "alice@contoso.ch", true),
            &["Ali@Contoso.ch", "ali@contoso.ch", "alice@contoso.ch", "a.example@fabrikam.ch"],
        );
        let got = b.ensure(&d).await.unwrap().account;
        assert_eq!(got.aliases, ["a.example@fabrikam.ch", "ali@contoso.ch"], "lower-cased, deduplicated, sorted");
        assert_eq!(b.get("id-1").await.unwrap().unwrap().aliases, got.aliases);
        assert_eq!(b.ensure(&d).await.unwrap().change, Change::Unchanged);

        // A hand-made alias and a hand-removed one are both repaired.
        exec(&b, "DELETE FROM aliases WHERE address = 'ali@contoso.ch'").await;
        exec(&b, "INSERT INTO aliases (address, account_id) VALUES ('stray@contoso.ch', 'id-1')").await;
        assert_eq!(b.ensure(&d).await.unwrap().change, Change::Updated);
        assert_eq!(b.get("id-1").await.unwrap().unwrap().aliases, got.aliases);

        let fewer = with_aliases(desired("id-1", "alice@contoso.ch", true), &["ali@contoso.ch"]);
        assert_eq!(b.ensure(&fewer).await.unwrap().change, Change::Updated);
        assert_eq!(alias_rows(&b).await, [("ali@contoso.ch".to_owned(), "id-1".to_owned())]);
        b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        assert!(alias_rows(&b).await.is_empty());

        let bad = with_aliases(desired("id-1", "alice@contoso.ch", true), &["not an address"]);
        let err = b.ensure(&bad).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("alias"), "{err}");
    }

    #[tokio::test]
    async fn postfix_delivers_aliases_of_active_accounts_only() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&with_aliases(desired("id-1", "alice@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
        let lookup = |key: &str| POSTFIX_ACCOUNT_ALIAS_QUERY.replace("%s", key);
        let found: Vec<String> = sqlx::query_scalar(&lookup("Ali@Contoso.ch")).fetch_all(&b.pool).await.unwrap();
        assert_eq!(found, ["alice@contoso.ch"]);
        b.disable("id-1").await.unwrap();
        let found: Vec<String> = sqlx::query_scalar(&lookup("ali@contoso.ch")).fetch_all(&b.pool).await.unwrap();
        assert!(found.is_empty());
    }

    #[tokio::test]
    async fn alias_conflicts_are_permanent_in_every_direction() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&with_aliases(desired("a", "alice@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
        b.ensure_list(&list(&[])).await.unwrap();
        let refused = |d: DesiredAccount, message: &'static str| {
            let b = b.clone();
            async move {
                let err = b.ensure(&d).await.unwrap_err();
                assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
                assert!(err.message.contains(message), "{err}");
                assert_eq!(b.get(&d.account_id).await.unwrap(), None, "nothing written");
            }
        };
        let bob = || desired("b", "bob@contoso.ch", true);
        refused(with_aliases(bob(), &["alice@contoso.ch"]), "alias alice@contoso.ch is already used by account a")
            .await;
        refused(with_aliases(bob(), &["ali@contoso.ch"]), "alias ali@contoso.ch is already an alias of account a")
            .await;
        refused(with_aliases(bob(), &["sales@contoso.ch"]), "alias sales@contoso.ch is already used by list list-1")
            .await;
        refused(desired("b", "ali@contoso.ch", true), "address ali@contoso.ch is already an alias of account a").await;
        refused(desired("b", "sales@contoso.ch", true), "address sales@contoso.ch is already used by list list-1")
            .await;

        // An existing account is not changed either.
        b.ensure(&bob()).await.unwrap();
        let err = b.ensure(&with_aliases(bob(), &["ali@contoso.ch"])).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(b.get("b").await.unwrap().unwrap().aliases.is_empty());
        let err = b.ensure(&desired("b", "ali@contoso.ch", true)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert_eq!(b.get("b").await.unwrap().unwrap().address, "bob@contoso.ch");

        let taken = DesiredList { list_id: "list-2".into(), address: "ALI@contoso.ch".into(), ..list(&[]) };
        let err = b.ensure_list(&taken).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("already an alias of account a"), "{err}");

        // Freed aliases can be taken.
        b.ensure(&desired("a", "alice@contoso.ch", true)).await.unwrap();
        b.ensure(&with_aliases(bob(), &["ali@contoso.ch"])).await.unwrap();
    }

    #[tokio::test]
    async fn an_alias_taken_concurrently_is_explained() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&with_aliases(desired("a", "alice@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
        // As if `a` had written the alias after `b` checked: the insert hits the primary key.
        let wanted = Wanted::new(&with_aliases(desired("b", "bob@contoso.ch", true), &["ali@contoso.ch"])).unwrap();
        let err = b.write(&wanted, &Change::Created).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
        assert!(err.message.contains("already an alias of account a"), "{err}");
        assert_eq!(b.get("b").await.unwrap(), None, "the row is rolled back with its aliases");
    }

    #[tokio::test]
    async fn an_unowned_legacy_account_is_adopted_with_its_mail() {
        let db = temp_db();
        let b = backend(&db).await;
        insert_legacy(&b, "legacy-1", "alice@contoso.ch", "legacy/alice/").await;
        exec(&b, "INSERT INTO aliases (address, account_id) VALUES ('ali@contoso.ch', 'legacy-1')").await;
        exec(&b, "INSERT INTO list_members (list_id, account_id) VALUES ('l1', 'legacy-1'), ('l2', 'legacy-1')").await;
        exec(&b, "INSERT INTO list_members (list_id, account_id) VALUES ('l2', 'id-1')").await;
        assert_eq!(b.get("legacy-1").await.unwrap().unwrap().owner, None);

        let d = with_aliases(desired("id-1", "Alice@contoso.ch", true), &["ali@contoso.ch", "a@contoso.ch"]);
        let adopted = b.ensure(&d).await.unwrap();
        assert_eq!(adopted.change, Change::Adopted { previous_account_id: "legacy-1".into() });
        assert_eq!(b.get("legacy-1").await.unwrap(), None);
        assert_eq!(b.get("id-1").await.unwrap().unwrap(), adopted.account);
        assert_eq!(adopted.account.aliases, ["a@contoso.ch", "ali@contoso.ch"]);
        assert_eq!(column(&b, "id-1", "maildir").await.as_deref(), Some("legacy/alice/"));
        assert_eq!(column(&b, "id-1", "password").await.as_deref(), Some("{PLAIN}secret"));
        assert_eq!(column(&b, "id-1", "created_at").await.as_deref(), Some("2020-01-01T00:00:00.000Z"));
        assert_eq!(column(&b, "id-1", "owner").await.as_deref(), Some("contoso/alice"));
        let members: Vec<(String, String)> =
            sqlx::query_as("SELECT list_id, account_id FROM list_members ORDER BY list_id")
                .fetch_all(&b.pool)
                .await
                .unwrap();
        assert_eq!(members, [("l1".into(), "id-1".into()), ("l2".into(), "id-1".into())], "nothing dangles");
        assert_eq!(b.ensure(&d).await.unwrap().change, Change::Unchanged);
    }

    #[tokio::test]
    async fn an_account_owned_by_someone_else_is_not_adopted() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&owned_by(desired("id-1", "alice@contoso.ch", true), "contoso/alice")).await.unwrap();
        let err = b.ensure(&owned_by(desired("id-2", "alice@contoso.ch", true), "contoso/alice2")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.message.contains("address alice@contoso.ch is already used by account id-1"), "{err}");
        assert_eq!(b.get("id-1").await.unwrap().unwrap().owner.as_deref(), Some("contoso/alice"));

        // Nor an unowned one by an account that already has a row of its own.
        insert_legacy(&b, "legacy-1", "bob@contoso.ch", "legacy/bob/").await;
        let err = b.ensure(&desired("id-1", "bob@contoso.ch", true)).await.unwrap_err();
        assert!(err.message.contains("already used by account legacy-1"), "{err}");
        assert_eq!(b.get("legacy-1").await.unwrap().unwrap().owner, None);
    }

    #[tokio::test]
    async fn a_released_account_is_adopted_by_the_next_owner() {
        let db = temp_db();
        let b = backend(&db).await;
        b.release("absent", true).await.unwrap();
        b.ensure(&with_aliases(desired("id-1", "alice@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
        let maildir = column(&b, "id-1", "maildir").await;

        // The same label adopts even without a release (the resource was recreated under a new uid).
        let same = b.ensure(&desired("id-2", "alice@contoso.ch", true)).await.unwrap();
        assert_eq!(same.change, Change::Adopted { previous_account_id: "id-1".into() });
        assert!(same.account.aliases.is_empty());

        b.release("id-2", false).await.unwrap();
        let released = b.get("id-2").await.unwrap().unwrap();
        assert_eq!((released.owner, released.enabled), (None, true));
        let stamp = column(&b, "id-2", "updated_at").await;
        b.release("id-2", false).await.unwrap();
        assert_eq!(column(&b, "id-2", "updated_at").await, stamp, "a repeated release writes nothing");
        b.release("id-2", true).await.unwrap();
        assert!(!b.get("id-2").await.unwrap().unwrap().enabled);

        let other = b.ensure(&owned_by(desired("id-3", "alice@contoso.ch", true), "fabrikam/alice")).await.unwrap();
        assert_eq!(other.change, Change::Adopted { previous_account_id: "id-2".into() });
        assert_eq!(b.get("id-3").await.unwrap().unwrap(), other.account);
        assert_eq!(column(&b, "id-3", "maildir").await, maildir);
        assert_eq!(column(&b, "id-3", "active").await.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn only_one_of_two_concurrent_adopters_wins() {
        let db = temp_db();
        let b = backend(&db).await;
        for round in 0..10 {
            let address = format!("user{round}@contoso.ch");
            insert_legacy(&b, &format!("legacy-{round}"), &address, &format!("legacy/{round}/")).await;
            let first = owned_by(desired(&format!("a-{round}"), &address, true), "contoso/a");
            let second = owned_by(desired(&format!("b-{round}"), &address, true), "contoso/b");
            let (x, y) = tokio::join!(b.ensure(&first), b.ensure(&second));
            let (winner, loser) = match (x, y) {
                (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
                (x, y) => panic!("round {round}: exactly one must win: {x:?} {y:?}"),
            };
            assert_eq!(winner.change, Change::Adopted { previous_account_id: format!("legacy-{round}") });
            assert_eq!(loser.kind, ErrorKind::Permanent, "{loser}");
            assert!(loser.message.contains(&format!("already used by account {}", winner.account.account_id)));
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailboxes WHERE address = $1")
                .bind(&address)
                .fetch_one(&b.pool)
                .await
                .unwrap();
            assert_eq!(count, 1);
            assert_eq!(b.get(&winner.account.account_id).await.unwrap(), Some(winner.account));
        }
    }

    #[tokio::test]
    async fn accounts_in_lists_the_given_domains_with_their_aliases() {
        let db = temp_db();
        let b = backend(&db).await;
        assert!(b.accounts_in(&["contoso.ch".into()]).await.unwrap().is_empty());
        b.ensure(&with_aliases(desired("c", "carol@contoso.ch", true), &["c2@x.ch", "c1@x.ch"])).await.unwrap();
        b.ensure(&with_aliases(desired("a", "alice@contoso.ch", false), &["a@x.ch"])).await.unwrap();
        b.ensure(&with_aliases(desired("f", "frank@fabrikam.ch", true), &["f@contoso.ch"])).await.unwrap();
        b.ensure(&desired("t", "tom@tailspin.ch", true)).await.unwrap();
        insert_legacy(&b, "legacy", "Old@Contoso.CH", "legacy/old/").await;

        let got = b.accounts_in(&["Contoso.ch".into(), "fabrikam.ch".into(), "contoso.ch".into()]).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["legacy", "a", "c", "f"], "ordered by address, bytewise");
        assert_eq!(got[1], b.get("a").await.unwrap().unwrap());
        assert_eq!(got[2].aliases, ["c1@x.ch", "c2@x.ch"]);
        assert_eq!(got[0].owner, None);
        assert!(b.accounts_in(&[]).await.unwrap().is_empty());
        assert!(b.accounts_in(&["northwind.ch".into()]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn delete_removes_aliases_and_memberships() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&with_aliases(desired("a", "alice@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
        b.ensure(&with_aliases(desired("b", "bob@contoso.ch", true), &["bo@contoso.ch"])).await.unwrap();
        b.ensure_list(&list(&["a", "b"])).await.unwrap();
        b.delete("a").await.unwrap();
        assert_eq!(alias_rows(&b).await, [("bo@contoso.ch".to_owned(), "b".to_owned())]);
        let members: Vec<String> =
            sqlx::query_scalar("SELECT account_id FROM list_members").fetch_all(&b.pool).await.unwrap();
        assert_eq!(members, ["b"]);
        // The alias is free again.
        b.ensure(&with_aliases(desired("c", "carol@contoso.ch", true), &["ali@contoso.ch"])).await.unwrap();
    }

    #[tokio::test]
    async fn an_empty_owner_is_refused() {
        let db = temp_db();
        let b = backend(&db).await;
        let err = b.ensure(&owned_by(desired("a", "alice@contoso.ch", true), "")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
    }

    /// The schema before owners and aliases.
    const OLD_SCHEMA: &[&str] = &[
        "CREATE TABLE mailboxes (account_id TEXT NOT NULL PRIMARY KEY, address TEXT NOT NULL UNIQUE, \
         local_part TEXT NOT NULL, domain TEXT NOT NULL, display_name TEXT, \
         active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)), maildir TEXT NOT NULL UNIQUE, \
         quota_bytes BIGINT, password TEXT, created_at TEXT, updated_at TEXT)",
        "CREATE INDEX mailboxes_domain ON mailboxes (domain)",
        "CREATE TABLE lists (list_id TEXT NOT NULL PRIMARY KEY, address TEXT NOT NULL UNIQUE, display_name TEXT, \
         created_at TEXT, updated_at TEXT)",
        "CREATE TABLE list_members (list_id TEXT NOT NULL, account_id TEXT NOT NULL, \
         PRIMARY KEY (list_id, account_id))",
        "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir, quota_bytes) \
         VALUES ('old-1', 'alice@contoso.ch', 'alice', 'contoso.ch', 1, 'contoso.ch/alice/', 42)",
    ];

    #[tokio::test]
    async fn an_old_schema_is_upgraded_at_connect() {
        let db = temp_db();
        let url = format!("sqlite://{}?mode=rwc", db.path.display());
        let pool = AnyPool::connect(&url).await.unwrap();
        for statement in OLD_SCHEMA {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let b = backend(&db).await;
        let old = b.get("old-1").await.unwrap().unwrap();
        assert_eq!((old.owner, old.quota_bytes, old.aliases), (None, Some(42), vec![]));
        let adopted = b.ensure(&with_aliases(desired("id-1", "alice@contoso.ch", true), &["ali@contoso.ch"])).await;
        assert_eq!(adopted.unwrap().change, Change::Adopted { previous_account_id: "old-1".into() });
        b.close().await;
        // Upgrading is idempotent.
        let again = backend(&db).await;
        assert_eq!(again.get("id-1").await.unwrap().unwrap().aliases, ["ali@contoso.ch"]);
    }

    /// The documented Postfix `virtual_alias_maps` query for account aliases, as Postfix runs it.
    pub(crate) const POSTFIX_ACCOUNT_ALIAS_QUERY: &str = "SELECT m.address FROM aliases a JOIN mailboxes m ON m.account_id = a.account_id WHERE a.address = lower('%s') AND m.active = 1";

    /// The documented Postfix `virtual_alias_maps` query, as Postfix runs it.
    pub(crate) const POSTFIX_ALIAS_QUERY: &str = "SELECT m.address FROM lists l JOIN list_members lm ON lm.list_id = l.list_id JOIN mailboxes m ON m.account_id = lm.account_id WHERE l.address = lower('%s') AND m.active = 1";

    async fn list_recipients(b: &SqlBackend, list_address: &str) -> Vec<String> {
        let sql = POSTFIX_ALIAS_QUERY.replace("%s", list_address);
        let mut recipients: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&b.pool).await.unwrap();
        recipients.sort();
        recipients
    }

    fn list(members: &[&str]) -> DesiredList {
        DesiredList {
            list_id: "list-1".into(),
            address: "Sales@Contoso.ch".into(),
            display_name: Some("Sales".into()),
            member_account_ids: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn a_list_delivers_to_its_active_members_only() {
        let db = temp_db();
        let b = backend(&db).await;
        b.ensure(&desired("a", "alice@contoso.ch", true)).await.unwrap();
        b.ensure(&desired("b", "bob@contoso.ch", true)).await.unwrap();
        b.ensure(&desired("c", "carol@contoso.ch", false)).await.unwrap();
        let created = b.ensure_list(&list(&["a", "b", "c", "unknown"])).await.unwrap();
        assert_eq!(created.address, "sales@contoso.ch");
        assert_eq!(created.member_count, 4);
        assert_eq!(list_recipients(&b, "SALES@contoso.ch").await, ["alice@contoso.ch", "bob@contoso.ch"]);

        b.disable("b").await.unwrap();
        assert_eq!(list_recipients(&b, "sales@contoso.ch").await, ["alice@contoso.ch"]);

        b.ensure_list(&list(&["b", "c"])).await.unwrap();
        b.ensure(&desired("c", "carol@contoso.ch", true)).await.unwrap();
        assert_eq!(list_recipients(&b, "sales@contoso.ch").await, ["carol@contoso.ch"]);

        b.delete_list("list-1").await.unwrap();
        b.delete_list("list-1").await.unwrap();
        assert!(list_recipients(&b, "sales@contoso.ch").await.is_empty());
        assert!(b.get("c").await.unwrap().is_some(), "deleting a list never deletes accounts");
    }

    #[tokio::test]
    async fn a_list_holds_thousands_of_members_and_its_address_is_its_own() {
        let db = temp_db();
        let b = backend(&db).await;
        let members: Vec<String> = (0..10_000).map(|i| format!("member-{i}")).collect();
        let desired_list = DesiredList { member_account_ids: members.clone(), ..list(&[]) };
        assert_eq!(b.ensure_list(&desired_list).await.unwrap().member_count, 10_000);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM list_members").fetch_one(&b.pool).await.unwrap();
        assert_eq!(count, 10_000);

        b.ensure(&desired("a", "alice@contoso.ch", true)).await.unwrap();
        let taken = DesiredList { list_id: "list-2".into(), address: "alice@contoso.ch".into(), ..list(&[]) };
        assert_eq!(b.ensure_list(&taken).await.unwrap_err().kind, ErrorKind::Permanent);
    }
}
