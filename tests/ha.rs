//! High availability with real processes: two operator binaries against the real control plane,
//! both serving SCIM, one running the controllers under a Lease. The leader is killed while it
//! reconciles; the other replica takes over within the documented bound and every user ends Ready
//! with exactly one mailbox. A SIGTERM then releases the Lease at once.

mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use cleanmail_operator::crd::CleanmailUser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{
    cluster::{self, eventually},
    process::{self, Replica},
    scim::{Scim, entra_user},
};

const LEASE: &str = "ha-lease";
/// The Lease duration the replicas run with; a crashed leader is replaced within it plus the
/// renewal slack the README documents (5 s).
const LEASE_SECONDS: u64 = 6;
const TAKEOVER_BOUND: Duration = Duration::from_secs(LEASE_SECONDS + 5);
const CONVERGE: Duration = Duration::from_secs(120);

fn start_replica(name: &str, namespace: &str, database: &Path) -> Replica {
    let env = [
        ("CLEANMAIL_LEASE_NAMESPACE", namespace.to_string()),
        ("CLEANMAIL_LEASE_NAME", LEASE.to_string()),
        ("CLEANMAIL_LEASE_DURATION_SECONDS", LEASE_SECONDS.to_string()),
        // Rate-limited, as a cautious deployment runs them: the limited client must carry leader
        // election, the watches and provisioning alike.
        ("CLEANMAIL_API_QPS", "200".to_string()),
    ];
    process::start(name, &cluster::control_plane().kubeconfig, database, &env)
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Every user has `Ready=True` and exactly one mailbox row, whose account id is the one in status.
async fn all_provisioned(users: &Api<CleanmailUser>, database: &Path, expected: usize) -> Option<()> {
    let list = users.list(&Default::default()).await.ok()?;
    if list.items.len() != expected {
        return None;
    }
    let url = format!("sqlite://{}?mode=ro", database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
    let mut complete = true;
    for user in &list.items {
        let status = user.status.as_ref()?;
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let rows: Vec<(String,)> = sqlx::query_as("SELECT account_id FROM mailboxes WHERE address = $1")
            .bind(user.spec.user_name.to_lowercase())
            .fetch_all(&pool)
            .await
            .ok()?;
        let account = status.mailbox.as_ref().map(|m| m.account_id.clone());
        complete &= ready && rows.len() == 1 && account.as_deref() == rows.first().map(|r| r.0.as_str());
    }
    pool.close().await;
    complete.then_some(())
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_every_user_ends_ready() {
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "ha", &["ha.ch"], "Delete").await;
    let database = cluster::control_plane().dir.join("ha.db");
    let mut replicas = vec![start_replica("ha-a", &namespace, &database), start_replica("ha-b", &namespace, &database)];
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);

    // Both replicas serve SCIM; exactly one leads, and the Lease names it.
    for replica in &replicas {
        replica.wait_until_ready(CONVERGE).await;
        Scim::new(&replica.scim_url, &token).wait_until_usable().await;
    }
    let leader = eventually("exactly one leader", CONVERGE, || async {
        let (a, b) = (replicas[0].leads().await?, replicas[1].leads().await?);
        (a != b).then_some(usize::from(b))
    })
    .await;
    let holder_name = holder(&leases).await.expect("the Lease has a holder");
    assert!(holder_name.starts_with(&format!("{}-", replicas[leader].name)), "holder {holder_name}");

    // Writes go to both replicas; the leader is killed while it provisions them, and more users
    // arrive while nobody leads.
    for i in 0..10 {
        let scim = Scim::new(&replicas[i % 2].scim_url, &token);
        let reply = scim.post("/Users", &entra_user(&format!("user{i}@ha.ch"), &format!("u{i}"))).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let killed = replicas.remove(leader);
    drop(killed);
    let started = Instant::now();
    let survivor = &replicas[0];
    let scim = Scim::new(&survivor.scim_url, &token);
    for i in 10..20 {
        let reply = scim.post("/Users", &entra_user(&format!("user{i}@ha.ch"), &format!("u{i}"))).await;
        assert_eq!(reply.status, 201, "the survivor serves SCIM without a leader: {}", reply.body);
    }
    eventually("the survivor leads", TAKEOVER_BOUND + Duration::from_secs(5), || async {
        survivor.leads().await.filter(|l| *l)
    })
    .await;
    let takeover = started.elapsed();
    assert!(takeover <= TAKEOVER_BOUND, "takeover took {takeover:?}, documented bound {TAKEOVER_BOUND:?}");

    // The survivor finishes what the dead leader started, once per user.
    eventually("20 users Ready with one mailbox each", CONVERGE, || all_provisioned(&users, &database, 20)).await;

    // SIGTERM: the survivor releases the Lease long before it would expire, and exits cleanly.
    let mut survivor = replicas.remove(0);
    let pid = survivor.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("send SIGTERM");
    assert!(status.success());
    let started = Instant::now();
    eventually("the Lease is released", Duration::from_secs(LEASE_SECONDS), || async {
        holder(&leases).await.is_none().then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(LEASE_SECONDS), "released, not expired");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = survivor.child.try_wait().expect("replica status") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the replica did not exit within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");

    // Request logs carry request ids and never the bearer token.
    for name in ["ha-a", "ha-b"] {
        let log = std::fs::read_to_string(cluster::control_plane().dir.join(format!("{name}.log"))).expect("log");
        assert!(log.contains("request_id="), "{name}: requests are logged with their id");
        assert!(!log.contains(&token), "{name}: the token never reaches the log");
    }
}
