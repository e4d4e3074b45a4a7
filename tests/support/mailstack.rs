//! Throwaway PostgreSQL and Dovecot instances for integration tests.
//!
//! Each instance lives in its own temporary directory, listens on 127.0.0.1 only (on a free port)
//! and never touches the system services the packages install. Every server runs under a small
//! `sh` watchdog that stops it (and removes its directory) when the instance is dropped or when the
//! test process goes away, even by SIGKILL, so nothing is left running after the tests.
//!
//! Needs (Debian 12 packages, installed by `tools/install-deps.sh`): postgresql-15, dovecot-core,
//! dovecot-sqlite, dovecot-pgsql, and util-linux's `setpriv`. Must run as root (PostgreSQL is run
//! as the `postgres` system user, Dovecot drops privileges itself).
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The mail root the documented queries use; tests substitute their own directory.
pub const DOC_MAIL_ROOT: &str = "/var/vmail/";

/// Dovecot `user_query` as documented in docs/sql-schema.md.
pub const USER_QUERY: &str = "SELECT address AS user, '/var/vmail/' || maildir AS home, 'maildir:/var/vmail/' || maildir AS mail, '*:bytes=' || quota_bytes AS quota_rule FROM mailboxes WHERE address = '%Lu' AND active = 1";
/// Dovecot `password_query` as documented.
pub const PASSWORD_QUERY: &str =
    "SELECT address AS user, password FROM mailboxes WHERE address = '%Lu' AND active = 1 AND password IS NOT NULL";
/// Dovecot `iterate_query` as documented.
pub const ITERATE_QUERY: &str = "SELECT address AS user FROM mailboxes WHERE active = 1";
/// Postfix `virtual_mailbox_domains` query as documented.
pub const POSTFIX_DOMAINS_QUERY: &str = "SELECT DISTINCT domain FROM mailboxes WHERE domain = lower('%s')";
/// Postfix `virtual_mailbox_maps` query as documented.
pub const POSTFIX_MAILBOXES_QUERY: &str = "SELECT maildir FROM mailboxes WHERE address = lower('%s') AND active = 1";
/// Postfix `virtual_alias_maps` query for account aliases as documented.
pub const POSTFIX_ACCOUNT_ALIASES_QUERY: &str = "SELECT m.address FROM aliases a JOIN mailboxes m ON m.account_id = a.account_id WHERE a.address = lower('%s') AND m.active = 1";

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// doveadm's exit code when the user does not exist (EX_NOUSER from sysexits.h).
pub const DOVEADM_EXIT_NOUSER: i32 = 67;
/// doveadm's exit code when authentication fails (EX_NOPERM).
pub const DOVEADM_EXIT_NOPERM: i32 = 77;
/// doveadm's exit code for a temporary failure, e.g. the database is unreachable (EX_TEMPFAIL).
pub const DOVEADM_EXIT_TEMPFAIL: i32 = 75;

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run `sudo tools/install-deps.sh` to install the mail stack \
         (postgresql-15, dovecot-core, dovecot-sqlite, dovecot-pgsql)"
    );
}

fn require_root() {
    let out = run(Command::new("id").arg("-u"), COMMAND_TIMEOUT);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the mail stack tests must run as root (PostgreSQL runs as user postgres, Dovecot drops \
         privileges itself)"
    );
}

/// A free TCP port on 127.0.0.1 (free when this returns; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{desc} did not finish within {timeout:?}");
    });
    Output { status, stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `sh` script that runs a server as its child and stops it with `$2` when told to (SIGTERM to the
/// script), when the test process `$1` is gone, or when the server exits; then removes `$3`.
const WATCHDOG: &str = r#"
parent="$1"; sig="$2"; cleanup="$3"; shift 3
"$@" &
child=$!
stop() {
  trap '' TERM INT
  kill -s "$sig" "$child" 2>/dev/null
  i=0
  while [ "$i" -lt 100 ] && kill -0 "$child" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
  kill -s KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  rm -rf "$cleanup"
  exit 0
}
trap stop TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
stop
"#;

/// A server process under the watchdog.
struct Supervised {
    name: &'static str,
    watchdog: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `program args..` under the watchdog; its output goes to `log`; `cleanup` is removed
    /// once it has stopped.
    fn start(
        name: &'static str,
        stop_signal: &str,
        cleanup: &Path,
        log: &Path,
        program: &str,
        args: &[&str],
    ) -> Supervised {
        let log_file = fs::File::create(log).unwrap();
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(stop_signal)
            .arg(cleanup)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Supervised { name, watchdog, log: log.to_owned() }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the server's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.watchdog.try_wait().unwrap() {
            panic!("{} exited ({status}); log:\n{}", self.name, self.log());
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.watchdog.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-s", "TERM", &self.watchdog.id().to_string()]).status();
        if wait_timeout(&mut self.watchdog, Duration::from_secs(20)).is_none() {
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
    }
}

/// A PostgreSQL 15 server with an empty database, for one test.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:<port>/<database>`, trust authentication.
    pub url: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    server: Supervised,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Initializes a cluster in a temporary directory, starts it and creates database `cleanmail`.
    pub fn start() -> Postgres {
        for bin in ["initdb", "postgres", "psql"] {
            require(&format!("{PG_BIN}/{bin}"));
        }
        require("/usr/bin/setpriv");
        require_root();

        let dir = tempfile::Builder::new().prefix("cleanmail-pg-").tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        let data = format!("{root}/data");
        let chown = run(Command::new("chown").args(["postgres:postgres", &root]), COMMAND_TIMEOUT);
        assert!(chown.status.success(), "chown failed: {}", String::from_utf8_lossy(&chown.stderr));

        let as_postgres = |program: &str| {
            let mut cmd = Command::new("/usr/bin/setpriv");
            cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", program]);
            cmd
        };
        let initdb = run(
            as_postgres(&format!("{PG_BIN}/initdb")).args([
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            Duration::from_secs(120),
        );
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );

        let port = free_port();
        let port_s = port.to_string();
        let log = dir.path().join("postgres.log");
        let postgres_bin = format!("{PG_BIN}/postgres");
        // SIGINT is PostgreSQL's "fast shutdown": disconnect clients, then exit.
        let mut server = Supervised::start(
            "postgres",
            "INT",
            dir.path(),
            &log,
            "/usr/bin/setpriv",
            &[
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                &postgres_bin,
                "-D",
                &data,
                "-p",
                &port_s,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("unix_socket_directories={root}"),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
        );

        let database = "cleanmail".to_owned();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            server.assert_running();
            let out = run(
                Command::new(format!("{PG_BIN}/psql")).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port_s,
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-Atc",
                    &format!("CREATE DATABASE {database}"),
                ]),
                COMMAND_TIMEOUT,
            );
            if out.status.success() {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "PostgreSQL did not accept connections within {STARTUP_TIMEOUT:?}: {}\nlog:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }

        Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/{database}"),
            port,
            database,
            user: "postgres".into(),
            server,
            dir,
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Where Dovecot reads accounts from.
pub enum Source<'a> {
    /// A SQLite file (its directory is made traversable and the file readable for Dovecot).
    Sqlite(&'a Path),
    Postgres(&'a Postgres),
}

/// A Dovecot instance that resolves users through the documented SQL queries.
pub struct Dovecot {
    /// The dovecot.conf in use.
    pub config: PathBuf,
    /// The mail root the queries point at (stands for the documented `/var/vmail/`).
    pub mail_root: PathBuf,
    /// The generated dovecot-sql.conf.ext.
    pub sql_config: PathBuf,
    server: Supervised,
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// The `dovecot-sql.conf.ext` for `source`, with the documented queries and mail root
    /// replaced by `mail_root` (which must end with `/`).
    pub fn sql_config(source: &Source<'_>, mail_root: &str) -> String {
        let (driver, connect) = match source {
            Source::Sqlite(path) => ("sqlite", path.display().to_string()),
            Source::Postgres(pg) => {
                ("pgsql", format!("host=127.0.0.1 port={} dbname={} user={}", pg.port, pg.database, pg.user))
            }
        };
        let root = |q: &str| q.replace(DOC_MAIL_ROOT, mail_root);
        format!(
            "driver = {driver}\nconnect = {connect}\n\nuser_query = {}\npassword_query = {}\niterate_query = {}\n",
            root(USER_QUERY),
            root(PASSWORD_QUERY),
            root(ITERATE_QUERY),
        )
    }

    /// Starts Dovecot in the foreground (`dovecot -F`) with a configuration of its own: no
    /// network listeners, runtime files in a temporary directory, users from `source`, mail
    /// owned by the system user `mail`.
    pub fn start(source: Source<'_>) -> Dovecot {
        require(DOVECOT);
        require(DOVEADM);
        let driver = match source {
            Source::Sqlite(_) => "sqlite",
            Source::Postgres(_) => "pgsql",
        };
        require(&format!("/usr/lib/dovecot/modules/auth/libdriver_{driver}.so"));
        require_root();

        if let Source::Sqlite(path) = source {
            // Auth lookups may run in a process that dropped privileges: let it reach the file.
            use std::os::unix::fs::PermissionsExt;
            let parent = path.parent().unwrap();
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
            if path.exists() {
                fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
            }
        }

        let dir = tempfile::Builder::new().prefix("cleanmail-dovecot-").tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root = dir.path().to_str().unwrap().to_owned();
        let mail_root = format!("{root}/vmail/");
        fs::create_dir_all(&mail_root).unwrap();
        let sql_config = dir.path().join("dovecot-sql.conf.ext");
        fs::write(&sql_config, Self::sql_config(&source, &mail_root)).unwrap();
        let mail_uid = run(Command::new("id").args(["-u", "mail"]), COMMAND_TIMEOUT);
        let mail_uid = String::from_utf8_lossy(&mail_uid.stdout).trim().to_owned();
        assert!(!mail_uid.is_empty(), "system user `mail` is missing");

        let config = dir.path().join("dovecot.conf");
        fs::write(
            &config,
            format!(
                r#"# Test instance: no listeners, everything under {root}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
auth_failure_delay = 0
mail_uid = mail
mail_gid = mail
first_valid_uid = {mail_uid}
first_valid_gid = 1
passdb {{
  driver = sql
  args = {sql}
}}
userdb {{
  driver = sql
  args = {sql}
}}
"#,
                sql = sql_config.display()
            ),
        )
        .unwrap();

        let server = Supervised::start(
            "dovecot",
            "TERM",
            dir.path(),
            &dir.path().join("dovecot.stdout"),
            DOVECOT,
            &["-F", "-c", config.to_str().unwrap()],
        );
        let mut dovecot = Dovecot { config, mail_root: mail_root.into(), sql_config, server, dir };

        // Ready once a lookup of an unknown user gets a clean "no such user".
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            dovecot.server.assert_running();
            let out = dovecot.doveadm_user("readiness-probe@invalid.invalid");
            if out.status.code() == Some(DOVEADM_EXIT_NOUSER) {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "Dovecot did not answer user lookups within {STARTUP_TIMEOUT:?}: {:?} {}{}\nlog:\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    dovecot.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
        dovecot
    }

    fn doveadm_user(&self, address: &str) -> Output {
        run(Command::new(DOVEADM).arg("-c").arg(&self.config).args(["user", address]), COMMAND_TIMEOUT)
    }

    /// `doveadm user <address>`: its output (the userdb fields) when the user exists, `None` when
    /// it does not (exit code 67). Any other outcome panics with Dovecot's log.
    pub fn user_lookup(&self, address: &str) -> Option<String> {
        let out = self.doveadm_user(address);
        match out.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(DOVEADM_EXIT_NOUSER) => None,
            code => panic!(
                "doveadm user {address} failed with {code:?}: {}{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ),
        }
    }

    /// `doveadm user '*'`: every user the `iterate_query` lists, sorted.
    pub fn list_users(&self) -> Vec<String> {
        let out = run(Command::new(DOVEADM).arg("-c").arg(&self.config).args(["user", "*"]), COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "doveadm user '*' failed with {:?}: {}\nlog:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let mut users: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_owned()).collect();
        users.retain(|u| !u.is_empty());
        users.sort();
        users
    }

    /// `doveadm auth test <user> <password>`: whether the passdb accepts the password (exit code
    /// 0; 77, EX_NOPERM, when it does not). Any other outcome panics with Dovecot's log.
    /// `no-penalty` skips the growing delay Dovecot puts on attempts after a failure.
    pub fn auth_test(&self, user: &str, password: &str) -> bool {
        let out = run(
            Command::new(DOVEADM).arg("-c").arg(&self.config).args([
                "auth",
                "test",
                "-x",
                "no-penalty",
                user,
                password,
            ]),
            COMMAND_TIMEOUT,
        );
        match out.status.code() {
            Some(0) => true,
            Some(DOVEADM_EXIT_NOPERM) => false,
            code => panic!(
                "doveadm auth test {user} failed with {code:?}: {}{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ),
        }
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        log.push_str(&self.server.log());
        log
    }
}
