//! The SQL backend as the mail servers see it: accounts written by `SqlBackend` are resolved by a
//! real Dovecot through the documented `dovecot-sql.conf.ext` queries, and the documented Postfix
//! lookup queries answer as expected, on SQLite and on PostgreSQL.
//!
//! Needs the mail stack from `tools/install-deps.sh` and root.

mod support;

use cleanmail_operator::backend::sql::{SCHEMA, SqlBackend};
use cleanmail_operator::backend::{Change, DesiredAccount, ErrorKind, MailboxBackend};
use sqlx::AnyPool;
use support::mailstack::{
    Dovecot, ITERATE_QUERY, PASSWORD_QUERY, POSTFIX_ACCOUNT_ALIASES_QUERY, POSTFIX_DOMAINS_QUERY,
    POSTFIX_MAILBOXES_QUERY, Postgres, Source, USER_QUERY,
};

fn alice(enabled: bool) -> DesiredAccount {
    DesiredAccount {
        account_id: "4f1c1f7e-0000-4000-8000-000000000001".into(),
        address: "alice@contoso.ch".into(),
        display_name: Some("Alice Example".into()),
        enabled,
        quota_bytes: None,
        aliases: vec![],
        owner: "contoso/alice".into(),
    }
}

/// Runs a documented Postfix query the way Postfix does: `%s` replaced by the quoted lookup key.
async fn postfix_lookup(pool: &AnyPool, query: &str, key: &str) -> Option<String> {
    let sql = query.replace("%s", &key.replace('\'', "''"));
    sqlx::query_scalar::<_, String>(&sql).fetch_optional(pool).await.unwrap()
}

async fn exercise(url: &str, dovecot: &Dovecot) {
    let backend = SqlBackend::connect(url).await.unwrap();
    let pool = AnyPool::connect(url).await.unwrap();
    let root = dovecot.mail_root.to_str().unwrap();
    let home = format!("home\t{root}contoso.ch/alice/");

    assert_eq!(dovecot.user_lookup("alice@contoso.ch"), None);

    // Created enabled: Dovecot resolves the user, case-insensitively, to its maildir.
    backend.ensure(&alice(true)).await.unwrap();
    let out = dovecot.user_lookup("alice@contoso.ch").expect("alice resolves once created");
    assert!(out.contains(&home), "{out}");
    assert!(out.contains(&format!("mail\tmaildir:{root}contoso.ch/alice/")), "{out}");
    assert!(!out.contains("quota_rule"), "a NULL quota is no field: {out}");
    let out = dovecot.user_lookup("Alice@Contoso.CH").expect("lookups ignore case");
    assert!(out.contains(&home), "{out}");
    assert!(out.contains("user\talice@contoso.ch"), "the canonical name is returned: {out}");
    assert_eq!(dovecot.list_users(), ["alice@contoso.ch"]);
    assert_eq!(
        postfix_lookup(&pool, POSTFIX_MAILBOXES_QUERY, "Alice@contoso.ch").await.as_deref(),
        Some("contoso.ch/alice/")
    );
    assert_eq!(postfix_lookup(&pool, POSTFIX_DOMAINS_QUERY, "CONTOSO.ch").await.as_deref(), Some("contoso.ch"));
    assert_eq!(postfix_lookup(&pool, POSTFIX_DOMAINS_QUERY, "fabrikam.ch").await, None);
    assert_eq!(postfix_lookup(&pool, POSTFIX_MAILBOXES_QUERY, "bob@contoso.ch").await, None);

    // Provisioned without a password: no password login until one is set out of band.
    assert!(!dovecot.auth_test("alice@contoso.ch", "secret"));
    sqlx::query("UPDATE mailboxes SET password = '{PLAIN}secret'").execute(&pool).await.unwrap();
    let with_quota_and_alias =
        DesiredAccount { quota_bytes: Some(1073741824), aliases: vec!["Ali@contoso.ch".into()], ..alice(true) };
    assert_eq!(backend.ensure(&with_quota_and_alias).await.unwrap().change, Change::Updated);
    assert_eq!(
        postfix_lookup(&pool, POSTFIX_ACCOUNT_ALIASES_QUERY, "ALI@contoso.ch").await.as_deref(),
        Some("alice@contoso.ch")
    );
    assert!(dovecot.auth_test("alice@contoso.ch", "secret"));
    assert!(dovecot.auth_test("Alice@Contoso.ch", "secret"));
    assert!(!dovecot.auth_test("alice@contoso.ch", "wrong"));
    let out = dovecot.user_lookup("alice@contoso.ch").unwrap();
    assert!(out.contains("quota_rule\t*:bytes=1073741824"), "{out}");

    // Disabled: invisible to Dovecot (lookup and login) and to Postfix; the domain stays known.
    backend.disable(&alice(true).account_id).await.unwrap();
    assert_eq!(dovecot.user_lookup("alice@contoso.ch"), None);
    assert!(!dovecot.auth_test("alice@contoso.ch", "secret"));
    assert!(dovecot.list_users().is_empty());
    assert_eq!(postfix_lookup(&pool, POSTFIX_MAILBOXES_QUERY, "alice@contoso.ch").await, None);
    assert_eq!(postfix_lookup(&pool, POSTFIX_ACCOUNT_ALIASES_QUERY, "ali@contoso.ch").await, None);
    assert_eq!(postfix_lookup(&pool, POSTFIX_DOMAINS_QUERY, "contoso.ch").await.as_deref(), Some("contoso.ch"));

    // Enabled again: back, with its password and mail where they were.
    backend.ensure(&alice(true)).await.unwrap();
    let out = dovecot.user_lookup("alice@contoso.ch").expect("alice resolves once re-enabled");
    assert!(out.contains(&home), "{out}");
    assert!(dovecot.auth_test("alice@contoso.ch", "secret"));

    // Renamed: found under the new address only, mail still in the original maildir.
    let mut renamed = alice(true);
    renamed.address = "alice.smith@contoso.ch".into();
    backend.ensure(&renamed).await.unwrap();
    assert_eq!(dovecot.user_lookup("alice@contoso.ch"), None);
    let out = dovecot.user_lookup("alice.smith@contoso.ch").expect("resolves after rename");
    assert!(out.contains(&home), "{out}");
    assert_eq!(
        postfix_lookup(&pool, POSTFIX_MAILBOXES_QUERY, "alice.smith@contoso.ch").await.as_deref(),
        Some("contoso.ch/alice/")
    );
    backend.ensure(&alice(true)).await.unwrap();
    assert!(dovecot.user_lookup("alice@contoso.ch").is_some());

    // Deleted: gone.
    backend.delete(&alice(true).account_id).await.unwrap();
    assert_eq!(dovecot.user_lookup("alice@contoso.ch"), None);
    assert_eq!(postfix_lookup(&pool, POSTFIX_MAILBOXES_QUERY, "alice@contoso.ch").await, None);
    assert_eq!(postfix_lookup(&pool, POSTFIX_DOMAINS_QUERY, "contoso.ch").await, None);

    pool.close().await;
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_resolves_accounts_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mailboxes.db");
    let url = format!("sqlite://{}", db.display());
    // Create the file and schema before Dovecot opens it.
    SqlBackend::connect(&url).await.unwrap().close().await;
    let dovecot = tokio::task::block_in_place(|| Dovecot::start(Source::Sqlite(&db)));
    exercise(&url, &dovecot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_resolves_accounts_from_postgres() {
    let pg = tokio::task::block_in_place(Postgres::start);
    let backend = SqlBackend::connect(&pg.url).await.unwrap();
    assert!(backend.is_postgres());
    backend.close().await;
    let dovecot = tokio::task::block_in_place(|| Dovecot::start(Source::Postgres(&pg)));
    exercise(&pg.url, &dovecot).await;
}

/// The schema before owners and aliases, as an earlier operator version created it.
const OLD_SCHEMA: &[&str] = &[
    "CREATE TABLE mailboxes (account_id TEXT NOT NULL PRIMARY KEY, address TEXT NOT NULL UNIQUE, \
     local_part TEXT NOT NULL, domain TEXT NOT NULL, display_name TEXT, \
     active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)), maildir TEXT NOT NULL UNIQUE, \
     quota_bytes BIGINT, password TEXT, created_at TEXT, updated_at TEXT)",
    "CREATE INDEX mailboxes_domain ON mailboxes (domain)",
    "CREATE TABLE lists (list_id TEXT NOT NULL PRIMARY KEY, address TEXT NOT NULL UNIQUE, display_name TEXT, \
     created_at TEXT, updated_at TEXT)",
    "CREATE TABLE list_members (list_id TEXT NOT NULL, account_id TEXT NOT NULL, PRIMARY KEY (list_id, account_id))",
    "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir, password) \
     VALUES ('legacy-1', 'alice@contoso.ch', 'alice', 'contoso.ch', 1, 'legacy/alice/', '{PLAIN}secret')",
    "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir) \
     VALUES ('legacy-2', 'bob@contoso.ch', 'bob', 'contoso.ch', 1, 'legacy/bob/')",
    "INSERT INTO list_members (list_id, account_id) VALUES ('sales', 'legacy-1')",
];

fn account(id: &str, address: &str, owner: &str) -> DesiredAccount {
    DesiredAccount {
        account_id: id.into(),
        address: address.into(),
        display_name: None,
        enabled: true,
        quota_bytes: None,
        aliases: vec![],
        owner: owner.into(),
    }
}

async fn scalar(pool: &AnyPool, sql: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(sql).fetch_one(pool).await.unwrap()
}

/// Upgrade, quota, aliases, adoption, release and listing on a real PostgreSQL, starting from a
/// database an earlier version created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_upgrades_adopts_and_releases_on_postgres() {
    let pg = tokio::task::block_in_place(Postgres::start);
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&pg.url).await.unwrap();
    for statement in OLD_SCHEMA {
        sqlx::query(statement).execute(&pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let backend = SqlBackend::connect(&pg.url).await.unwrap();
    SqlBackend::connect(&pg.url).await.unwrap().close().await;
    assert_eq!(backend.get("legacy-1").await.unwrap().unwrap().owner, None);

    // An unowned row is adopted: same maildir and password, new key, memberships moved along.
    let alice = DesiredAccount {
        quota_bytes: Some(1 << 30),
        aliases: vec!["Ali@contoso.ch".into(), "alice@contoso.ch".into()],
        ..account("uid-1", "alice@contoso.ch", "contoso/alice")
    };
    let adopted = backend.ensure(&alice).await.unwrap();
    assert_eq!(adopted.change, Change::Adopted { previous_account_id: "legacy-1".into() });
    assert_eq!(adopted.account.aliases, ["ali@contoso.ch"]);
    assert_eq!(backend.get("uid-1").await.unwrap(), Some(adopted.account.clone()));
    let row = "FROM mailboxes WHERE account_id = 'uid-1'";
    assert_eq!(scalar(&pool, &format!("SELECT maildir {row}")).await.as_deref(), Some("legacy/alice/"));
    assert_eq!(scalar(&pool, &format!("SELECT password {row}")).await.as_deref(), Some("{PLAIN}secret"));
    assert_eq!(scalar(&pool, &format!("SELECT CAST(quota_bytes AS TEXT) {row}")).await.as_deref(), Some("1073741824"));
    assert_eq!(scalar(&pool, "SELECT MIN(account_id) FROM list_members").await.as_deref(), Some("uid-1"));
    assert_eq!(backend.ensure(&alice).await.unwrap().change, Change::Unchanged);

    // Drift is repaired.
    sqlx::query("UPDATE mailboxes SET quota_bytes = NULL, owner = NULL").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM aliases").execute(&pool).await.unwrap();
    assert_eq!(backend.ensure(&alice).await.unwrap().change, Change::Updated);
    assert_eq!(backend.get("uid-1").await.unwrap(), Some(adopted.account.clone()));

    // Someone else's row is not adopted; aliases cannot take others' addresses.
    let err = backend.ensure(&account("uid-9", "alice@contoso.ch", "contoso/mallory")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("already used by account uid-1"), "{err}");
    let greedy = DesiredAccount { aliases: vec!["ali@contoso.ch".into()], ..account("uid-9", "eve@contoso.ch", "x/y") };
    let err = backend.ensure(&greedy).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("alias ali@contoso.ch is already an alias of account uid-1"), "{err}");

    // Released, then adopted by another label; of two concurrent adopters only one wins.
    backend.release("uid-1", true).await.unwrap();
    let released = backend.get("uid-1").await.unwrap().unwrap();
    assert_eq!((released.owner, released.enabled), (None, false));
    let next = backend.ensure(&account("uid-2", "alice@contoso.ch", "fabrikam/alice")).await.unwrap();
    assert_eq!(next.change, Change::Adopted { previous_account_id: "uid-1".into() });
    let (bob, robert) =
        (account("uid-3", "bob@contoso.ch", "contoso/bob"), account("uid-4", "bob@contoso.ch", "contoso/robert"));
    let (x, y) = tokio::join!(backend.ensure(&bob), backend.ensure(&robert));
    assert!(x.is_ok() != y.is_ok(), "exactly one adopter wins: {x:?} {y:?}");
    let lost = x.err().or(y.err()).unwrap();
    assert_eq!(lost.kind, ErrorKind::Permanent, "{lost}");

    let listed = backend.accounts_in(&["CONTOSO.ch".into()]).await.unwrap();
    let addresses: Vec<&str> = listed.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(addresses, ["alice@contoso.ch", "bob@contoso.ch"]);
    assert!(backend.accounts_in(&["fabrikam.ch".into()]).await.unwrap().is_empty());

    backend.delete("uid-2").await.unwrap();
    assert_eq!(scalar(&pool, "SELECT MIN(address) FROM aliases").await, None);
    assert_eq!(scalar(&pool, "SELECT MIN(account_id) FROM list_members").await, None);
    pool.close().await;
    backend.close().await;
}

/// The queries under test are the ones the documentation gives, character for character.
#[test]
fn documented_configuration_is_what_is_tested() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs: Vec<(String, String)> = ["docs/sql-schema.md", "README.md"]
        .iter()
        .filter_map(|f| Some((f.to_string(), std::fs::read_to_string(format!("{root}/{f}")).ok()?)))
        .collect();
    let snippets = [
        USER_QUERY,
        PASSWORD_QUERY,
        ITERATE_QUERY,
        POSTFIX_DOMAINS_QUERY,
        POSTFIX_MAILBOXES_QUERY,
        POSTFIX_ACCOUNT_ALIASES_QUERY,
    ]
    .into_iter()
    .chain(SCHEMA.iter().copied());
    let (file, text) = docs
        .iter()
        .find(|(_, text)| text.contains(USER_QUERY))
        .unwrap_or_else(|| panic!("no document among docs/sql-schema.md, README.md gives the user_query"));
    for snippet in snippets {
        assert!(text.contains(snippet), "{file} does not contain:\n{snippet}");
    }
}
