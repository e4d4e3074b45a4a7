//! The SQL backend as the mail servers see it: accounts written by `SqlBackend` are resolved by a
//! real Dovecot through the documented `dovecot-sql.conf.ext` queries, and the documented Postfix
//! lookup queries answer as expected, on SQLite and on PostgreSQL.
//!
//! Needs the mail stack from `tools/install-deps.sh` and root.

mod support;

use cleanmail_operator::backend::sql::{SCHEMA, SqlBackend};
use cleanmail_operator::backend::{DesiredAccount, MailboxBackend};
use sqlx::AnyPool;
use support::mailstack::{
    Dovecot, ITERATE_QUERY, PASSWORD_QUERY, POSTFIX_DOMAINS_QUERY, POSTFIX_MAILBOXES_QUERY, Postgres, Source,
    USER_QUERY,
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
    sqlx::query("UPDATE mailboxes SET password = '{PLAIN}secret', quota_bytes = 1073741824")
        .execute(&pool)
        .await
        .unwrap();
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

/// The queries under test are the ones the documentation gives, character for character.
#[test]
fn documented_configuration_is_what_is_tested() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs: Vec<(String, String)> = ["docs/sql-schema.md", "README.md"]
        .iter()
        .filter_map(|f| Some((f.to_string(), std::fs::read_to_string(format!("{root}/{f}")).ok()?)))
        .collect();
    let snippets = [USER_QUERY, PASSWORD_QUERY, ITERATE_QUERY, POSTFIX_DOMAINS_QUERY, POSTFIX_MAILBOXES_QUERY]
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
