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

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use super::{Account, BackendError, DesiredAccount, DesiredList, ErrorKind, List, MailboxBackend, Result};

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
    updated_at   TEXT
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
];

/// Rows per multi-row INSERT of list members (well below SQLite's bound-parameter limit).
const MEMBER_BATCH: usize = 400;

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

    async fn row(&self, operation: &'static str, account_id: &str) -> Result<Option<StoredRow>> {
        let row = sqlx::query("SELECT account_id, address, display_name, active FROM mailboxes WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error(operation, account_id, e))?;
        row.map(|r| StoredRow::decode(&r).map_err(|e| db_error(operation, account_id, e))).transpose()
    }

    /// The account other than `account_id` that holds `address`, if any.
    async fn address_owner(&self, operation: &'static str, account_id: &str, address: &str) -> Result<Option<String>> {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM mailboxes WHERE address = $1 AND account_id <> $2")
                .bind(address)
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_error(operation, account_id, e))?;
        Ok(owner)
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

    fn conflict(account_id: &str, address: &str, owner: &str) -> BackendError {
        BackendError {
            kind: ErrorKind::Permanent,
            operation: "ensure",
            account_id: account_id.to_owned(),
            message: format!("address {address} is already used by account {owner}"),
            source: None,
        }
    }

    /// Turns a failed write into an error, explaining a unique violation on the address.
    async fn write_error(&self, account_id: &str, address: &str, err: sqlx::Error) -> BackendError {
        let unique = matches!(&err, sqlx::Error::Database(db)
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation);
        if unique {
            // Another writer got there first: either the address is now someone else's, or a
            // concurrent insert took the same maildir (a retry then picks another one).
            return match self.address_owner("ensure", account_id, address).await {
                Ok(Some(owner)) => Self::conflict(account_id, address, &owner),
                Ok(None) => BackendError { kind: ErrorKind::Transient, ..db_error("ensure", account_id, err) },
                Err(e) => e,
            };
        }
        db_error("ensure", account_id, err)
    }
}

/// What `ensure` compares against the desired state.
struct StoredRow {
    account_id: String,
    address: String,
    display_name: Option<String>,
    active: bool,
}

impl StoredRow {
    fn decode(row: &sqlx::any::AnyRow) -> std::result::Result<StoredRow, sqlx::Error> {
        Ok(StoredRow {
            account_id: row.try_get("account_id")?,
            address: row.try_get("address")?,
            display_name: row.try_get("display_name")?,
            active: row.try_get::<i64, _>("active")? != 0,
        })
    }

    fn account(self) -> Account {
        Account {
            account_id: self.account_id,
            address: self.address,
            display_name: self.display_name,
            enabled: self.active,
        }
    }
}

#[async_trait]
impl MailboxBackend for SqlBackend {
    /// Creates or updates the row keyed by `account_id`.
    ///
    /// The maildir is chosen once, at creation, as `<domain>/<local part>/` (or
    /// `<domain>/<local part>.<account id>/` when that directory already belongs to another row,
    /// e.g. to an account renamed away from this address). A later rename changes `address`,
    /// `local_part` and `domain` but never `maildir`: the mail stays where it is and mail servers
    /// find it through the new address.
    async fn ensure(&self, desired: &DesiredAccount) -> Result<Account> {
        let account_id = desired.account_id.as_str();
        if account_id.is_empty() {
            return Err(BackendError {
                kind: ErrorKind::Permanent,
                operation: "ensure",
                account_id: String::new(),
                message: "empty account id".into(),
                source: None,
            });
        }
        let addr = ParsedAddress::parse(&desired.address).map_err(|message| BackendError {
            kind: ErrorKind::Permanent,
            operation: "ensure",
            account_id: account_id.to_owned(),
            message,
            source: None,
        })?;
        let wanted = Account {
            account_id: account_id.to_owned(),
            address: addr.address.clone(),
            display_name: desired.display_name.clone(),
            enabled: desired.enabled,
        };

        if let Some(owner) = self.address_owner("ensure", account_id, &addr.address).await? {
            return Err(Self::conflict(account_id, &addr.address, &owner));
        }

        let now = now_rfc3339();
        let active: i32 = desired.enabled.into();
        let written = match self.row("ensure", account_id).await? {
            Some(current) => {
                if current.address == wanted.address
                    && current.display_name == wanted.display_name
                    && current.active == wanted.enabled
                {
                    return Ok(wanted);
                }
                sqlx::query(
                    "UPDATE mailboxes SET address = $2, local_part = $3, domain = $4, \
                     display_name = $5, active = $6, updated_at = $7 WHERE account_id = $1",
                )
                .bind(account_id)
                .bind(&addr.address)
                .bind(&addr.local_part)
                .bind(&addr.domain)
                .bind(desired.display_name.as_deref())
                .bind(active)
                .bind(&now)
                .execute(&self.pool)
                .await
            }
            None => {
                let mut maildir = format!("{}/{}/", addr.domain, addr.local_part);
                if self.maildir_taken(account_id, &maildir).await? {
                    maildir = format!("{}/{}.{}/", addr.domain, addr.local_part, path_safe(account_id));
                }
                // An upsert, so that a row created concurrently since the read above is updated
                // (keeping its maildir and created_at) rather than failing.
                sqlx::query(
                    "INSERT INTO mailboxes (account_id, address, local_part, domain, display_name, \
                     active, maildir, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     ON CONFLICT (account_id) DO UPDATE SET address = excluded.address, \
                     local_part = excluded.local_part, domain = excluded.domain, \
                     display_name = excluded.display_name, active = excluded.active, \
                     updated_at = excluded.updated_at",
                )
                .bind(account_id)
                .bind(&addr.address)
                .bind(&addr.local_part)
                .bind(&addr.domain)
                .bind(desired.display_name.as_deref())
                .bind(active)
                .bind(&maildir)
                .bind(&now)
                .execute(&self.pool)
                .await
            }
        };
        match written {
            Ok(_) => Ok(wanted),
            Err(e) => Err(self.write_error(account_id, &addr.address, e).await),
        }
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

    async fn delete(&self, account_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM mailboxes WHERE account_id = $1")
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("delete", account_id, e))?;
        Ok(())
    }

    async fn get(&self, account_id: &str) -> Result<Option<Account>> {
        Ok(self.row("get", account_id).await?.map(StoredRow::account))
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
        let got = b.ensure(&desired("id-1", " Alice@Contoso.CH ", true)).await.unwrap();
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
        let first = b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        let stamp = column(&b, "id-1", "updated_at").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(column(&b, "id-1", "updated_at").await, stamp, "no write when unchanged");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailboxes").fetch_one(&b.pool).await.unwrap();
        assert_eq!(count, 1);
        // A changed display name is written.
        let mut d = desired("id-1", "alice@contoso.ch", true);
        d.display_name = None;
        assert_eq!(b.ensure(&d).await.unwrap().display_name, None);
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
        let got = b.ensure(&desired("id-1", "alice.smith@fabrikam.ch", true)).await.unwrap();
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
        assert!(b.ensure(&desired("id-1", "alice@contoso.ch", true)).await.unwrap().enabled);
        assert!(b.get("id-1").await.unwrap().unwrap().enabled);
        // Creating disabled.
        let off = b.ensure(&desired("id-2", "bob@contoso.ch", false)).await.unwrap();
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
        let err = b.ensure(&desired("id-2", "ALICE@contoso.ch", true)).await.unwrap_err();
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
        let err = b.write_error("x", "alice@contoso.ch", err).await;
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
