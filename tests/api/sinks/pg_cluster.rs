//! A throwaway PostgreSQL cluster: Debian's `postgresql` package (`initdb` and `pg_ctl` from
//! `/usr/lib/postgresql/<major>/bin`), in a temporary folder, on a free loopback port, with
//! trust authentication for the user `postgres`. initdb and postgres refuse to run as root,
//! and CI runs as root: then the cluster belongs to `nobody` (uid and gid 65534). It is stopped
//! by its own `pg_ctl` when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::Connection;

/// nobody:nogroup on Debian.
const NOBODY: u32 = 65534;

pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// uid and gid the cluster runs as; `None`: as whoever runs the tests.
    owner: Option<(u32, u32)>,
}

/// The newest `/usr/lib/postgresql/<major>/bin` that holds `initdb`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server: /usr/lib/postgresql/*/bin/initdb is missing. Install Debian's package: \
             `apt-get install postgresql` (scripts/test.sh does)"
        ),
    }
}

impl PgCluster {
    /// initdb, then `pg_ctl start`; returns once the server accepts connections.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("inferd-pg-").tempdir().unwrap();
        // SAFETY: geteuid cannot fail and touches no memory.
        let owner = (unsafe { libc::geteuid() } == 0).then_some((NOBODY, NOBODY));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut cluster = Self { dir, bin, port: 0, owner };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-locale", "-E", "UTF8", "--no-sync"],
        );
        let path = data.join("postgresql.conf");
        let base = std::fs::read_to_string(&path).unwrap();
        // Another process may bind the port first: then again on another.
        for attempt in 1.. {
            cluster.port = super::free_port();
            // Loopback TCP only; the socket in the cluster's own folder (not
            // /var/run/postgresql, which nobody may not write). fsync off: a test cluster need
            // not survive a power cut, and a fast restart is a clean shutdown anyway.
            let conf = format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n\
                 synchronous_commit = off\nlog_min_messages = warning\n",
                cluster.port,
                cluster.dir.path().display()
            );
            std::fs::write(&path, format!("{base}{conf}")).unwrap();
            let out = cluster.pg_ctl_output(&["start"]);
            if out.status.success() {
                break;
            }
            let log = cluster.log();
            assert!(
                attempt < 5 && log.contains("could not bind"),
                "pg_ctl start failed ({}):\n{}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The URL a client connects with (the database `postgres`, the user `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are cut, then a clean shutdown).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    /// `pg_ctl restart -m fast`: every connection is cut, and the server is back when it returns.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    /// What the server logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}\n{}", self.url(), self.log()))
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self.pg_ctl_output(args);
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn pg_ctl_output(&self, args: &[&str]) -> Output {
        let (data, log) = (self.data(), self.log_file());
        let mut all = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.command("pg_ctl").args(&all).output().unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"))
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path()).env("LC_ALL", "C").env_remove("PGDATA").env_remove("PGPORT");
        if let Some((uid, gid)) = self.owner {
            // std drops the supplementary groups too when it changes the uid as root.
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join(program).display()));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    /// Stops the cluster by its own pg_ctl (whether or not it runs: a failure to stop one that
    /// does not is of no interest), then the folder goes.
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-w", "-t", "30", "stop", "-m", "immediate"])
            .output();
    }
}

/// The harness alone: a cluster starts, answers, restarts, stops and starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwaway_cluster_starts_restarts_and_stops() {
    let cluster = PgCluster::start();
    let mut conn = cluster.connect().await;
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    sqlx::query("create table t (x int)").execute(&mut conn).await.unwrap();
    sqlx::query("insert into t values (1), (2)").execute(&mut conn).await.unwrap();
    tokio::task::block_in_place(|| cluster.restart());
    // The connection made before the restart is cut.
    assert!(sqlx::query_scalar::<_, i64>("select count(*) from t").fetch_one(&mut conn).await.is_err());
    let mut conn = cluster.connect().await;
    let rows: i64 = sqlx::query_scalar("select count(*) from t").fetch_one(&mut conn).await.unwrap();
    assert_eq!(rows, 2, "the data outlives the restart");
    drop(conn);
    tokio::task::block_in_place(|| cluster.stop());
    assert!(sqlx::PgConnection::connect(&cluster.url()).await.is_err(), "stopped");
    tokio::task::block_in_place(|| cluster.start_again());
    let mut conn = cluster.connect().await;
    let rows: i64 = sqlx::query_scalar("select count(*) from t").fetch_one(&mut conn).await.unwrap();
    assert_eq!(rows, 2);
    drop(conn);
    let dir = cluster.dir().to_owned();
    drop(cluster);
    assert!(!dir.exists(), "the cluster's folder is removed");
}
