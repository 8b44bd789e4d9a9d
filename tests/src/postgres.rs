//! Throwaway PostgreSQL servers for tests, on loopback.
//!
//! The first server of a test process runs `initdb` once (about 2 s) into a template data
//! dir; each [`Server`] then starts from a copy of it on its own port and socket dir
//! (a fraction of a second) and is stopped when dropped. PostgreSQL refuses to run as
//! root, so under root the server programs run as the `postgres` user through `runuser`
//! (client programs, [`Server::client`], connect over TCP and run as us).
//!
//! [`Server::synchronous_standby`] adds a streaming standby of a server, for failover tests
//! ([`Server::crash`], [`Server::promote`]).
//!
//! With no PostgreSQL installed, [`Server::start`] answers `None` and the test skips,
//! unless `TOLLGATE_REQUIRE_PG=1` (set by `.ci/run`), where it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Connections a server accepts: room for several gateways' pools (a standby must allow at
/// least as many as its primary).
const MAX_CONNECTIONS: u32 = 200;
/// The `application_name` a standby streams under, which its primary waits for.
pub const STANDBY_NAME: &str = "standby";

/// A running server, stopped on drop.
pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server(127.0.0.1:{})", self.port)
    }
}

fn required() -> bool {
    std::env::var("TOLLGATE_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// The newest `/usr/lib/postgresql/<major>/bin` with `initdb` in it.
fn bin_dir() -> Option<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
fn run_pg(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command.args(args).output().map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{} {args:?}: {}{}", program.display(), String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

/// Makes `path` the postgres user's (when we are root).
fn hand_over(path: &Path) -> Result<(), String> {
    if !running_as_root() {
        return Ok(());
    }
    let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().map_err(|e| format!("chown: {e}"))?;
    status.success().then_some(()).ok_or_else(|| format!("chown -R postgres {} failed", path.display()))
}

/// The template data dir, made once per test process.
fn template(bin: &Path) -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<(tempfile::TempDir, PathBuf), String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            hand_over(dir.path())?;
            let data = dir.path().join("data");
            let data_arg = data.to_str().ok_or("non-UTF-8 temp dir")?;
            run_pg(&bin.join("initdb"), &["-D", data_arg, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"])?;
            Ok((dir, data))
        })
        .as_ref()
        .map(|(_, data)| data.clone())
        .map_err(Clone::clone)
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Server {
    /// A fresh server, or `None` when PostgreSQL is not installed (and not required).
    /// Panics when it is installed but does not start, or is required and missing.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(!required(), "TOLLGATE_REQUIRE_PG=1 but no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)");
            eprintln!("skipped: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        Some(Self::start_with(bin).unwrap_or_else(|e| panic!("starting a test PostgreSQL: {e}")))
    }

    fn start_with(bin: PathBuf) -> Result<Self, String> {
        let template = template(&bin)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let copied = Command::new("cp").arg("-a").arg(&template).arg(dir.path().join("data")).status().map_err(|e| format!("cp: {e}"))?;
        if !copied.success() {
            return Err("copying the template data dir failed".into());
        }
        hand_over(dir.path())?;
        Self::launch(bin, dir)
    }

    /// Starts the server whose data dir is `dir/data`, on a free port with its socket in
    /// `dir` (both the postgres user's).
    fn launch(bin: PathBuf, dir: tempfile::TempDir) -> Result<Self, String> {
        let data = dir.path().join("data");
        let port = free_port()?;
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections={MAX_CONNECTIONS}", dir.path().display());
        let log = dir.path().join("server.log");
        let (data_arg, log_arg) = (data.to_str().ok_or("non-UTF-8 temp dir")?, log.to_str().ok_or("non-UTF-8 temp dir")?);
        run_pg(&bin.join("pg_ctl"), &["-D", data_arg, "-l", log_arg, "-w", "-o", &options, "start"])
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(Self { bin, data, port, _dir: dir })
    }

    /// A streaming standby of this server, started, that this server then waits for at
    /// every commit: a base backup (`pg_basebackup -R -X stream`) named [`STANDBY_NAME`],
    /// and `synchronous_standby_names` set here (after the backup, so a promoted standby
    /// does not wait for a standby of its own). Returns once replication is synchronous.
    pub fn synchronous_standby(&self) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        hand_over(dir.path())?;
        let data = dir.path().join("data");
        let source = format!("host=127.0.0.1 port={} user=postgres application_name={STANDBY_NAME}", self.port);
        run_pg(&self.bin.join("pg_basebackup"), &["-d", &source, "-D", data.to_str().ok_or("non-UTF-8 temp dir")?, "-R", "-X", "stream", "--no-sync"])?;
        let standby = Self::launch(self.bin.clone(), dir)?;
        self.client("psql", &["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"), "-c", "SELECT pg_reload_conf()"])?;
        let started = Instant::now();
        loop {
            let state = self.client("psql", &["-X", "-At", "-c", &format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'")])?;
            if state.trim() == "sync" {
                return Ok(standby);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("the standby is not synchronous after 30 s (state {:?})", state.trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, every
    /// session cut).
    pub fn crash(&self) -> Result<(), String> {
        run_pg(&self.bin.join("pg_ctl"), &["-D", self.data.to_str().ok_or("non-UTF-8 temp dir")?, "-m", "immediate", "-w", "stop"])
    }

    /// Promotes a standby to primary (`pg_ctl promote`); returns once it accepts writes.
    pub fn promote(&self) -> Result<(), String> {
        run_pg(&self.bin.join("pg_ctl"), &["-D", self.data.to_str().ok_or("non-UTF-8 temp dir")?, "-w", "promote"])
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `postgres` as user `postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A connection string for `database` as user `postgres`.
    pub fn url_of(&self, database: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={database}", self.port)
    }

    /// Runs a client program of the server's version (`psql`, `pg_dump`, `pg_restore`,
    /// `createdb`, ...) with `args`, connected to this server as `postgres` (through
    /// `PGHOST`, `PGPORT` and `PGUSER`), and returns its standard output. Client programs
    /// connect over TCP, so they run as us, also under root, and read and write our files.
    pub fn client(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let path = self.bin.join(program);
        let output = Command::new(&path)
            .args(args)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("{program} {args:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(data) = self.data.to_str() {
            let _ = run_pg(&self.bin.join("pg_ctl"), &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}
