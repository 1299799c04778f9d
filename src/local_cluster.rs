//! A throwaway local PostgreSQL cluster for tests, examples and tools.
//!
//! [`database_url`] returns `DATABASE_URL` when it is set. Otherwise it starts
//! (or joins) one cluster per machine user under the temp directory, built
//! from the local PostgreSQL server binaries: a temp data directory, a free
//! loopback port, its unix socket inside that directory, tuned for speed
//! (`fsync=off`: the data is disposable). When running as root the server runs
//! as the `postgres` user, since PostgreSQL refuses root.
//!
//! Every process that uses the cluster holds a shared lock on a "users" file;
//! a small watchdog process started with the cluster stops it and removes its
//! directory once no process has held that lock for a while. So a whole test
//! run (many processes under nextest) shares one cluster, and nothing is left
//! running afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Seconds without any user before the watchdog stops the cluster.
const IDLE_SECONDS: u32 = 20;

/// Why the local cluster could not be provided.
#[derive(Debug, thiserror::Error)]
#[error("local PostgreSQL cluster: {0}")]
pub struct ClusterError(String);

/// The database URL tests and tools should use: `DATABASE_URL` when set,
/// otherwise the shared throwaway cluster's (started on first use).
///
/// # Errors
/// [`ClusterError`] when no server binaries are installed or the cluster
/// cannot start; the message says what to install.
pub fn database_url() -> Result<String, ClusterError> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.trim().is_empty()
    {
        return Ok(url);
    }
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| join_or_start().map_err(|e| e.0))
        .clone()
        .map_err(ClusterError)
}

fn err(msg: impl Into<String>) -> ClusterError {
    ClusterError(msg.into())
}

/// Directory holding the PostgreSQL server binaries.
fn bin_dir() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    // Prefer the newest installed major version.
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates
        .into_iter()
        .rev()
        .find(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .ok_or_else(|| {
            err("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin. Install the Debian \
                 package `postgresql-15` (apt-get install postgresql-15), set PG_BIN to their directory, or \
                 set DATABASE_URL to an existing server")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a server binary, as `postgres` when we are root.
fn pg_command(bin: &Path, tool: &str, root: bool) -> Command {
    let exe = bin.join(tool);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), ClusterError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn base_dir() -> PathBuf {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    std::env::temp_dir().join(format!("duroxide-pg-local-{user}"))
}

fn lock_file(path: &Path) -> Result<File, ClusterError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| err(format!("open {}: {e}", path.display())))
}

fn join_or_start() -> Result<String, ClusterError> {
    let base = base_dir();
    fs::create_dir_all(&base).map_err(|e| err(format!("create {}: {e}", base.display())))?;
    // The setup lock orders us against other starters and against the
    // watchdog's decision to stop; the users lock says "a process needs it".
    let setup = lock_file(&base.join("setup.lock"))?;
    setup.lock().map_err(|e| err(format!("lock setup: {e}")))?;
    let users = lock_file(&base.join("users.lock"))?;
    users
        .lock_shared()
        .map_err(|e| err(format!("lock users: {e}")))?;
    // Held for the life of the process.
    std::mem::forget(users);

    let result = ensure_running(&base);
    drop(setup);
    result
}

fn ensure_running(base: &Path) -> Result<String, ClusterError> {
    let bin = bin_dir()?;
    let root = is_root();
    let pg = base.join("pg");
    let data = pg.join("data");
    let port_file = base.join("port");

    if data.join("postmaster.pid").exists() {
        let mut status = pg_command(&bin, "pg_ctl", root);
        status.arg("status").arg("-D").arg(&data);
        if run(status, "pg_ctl status").is_ok() {
            if let Ok(port) = fs::read_to_string(&port_file) {
                return Ok(url(port.trim()));
            }
            // Running but unusable (no port recorded): stop it before starting afresh.
            let mut stop = pg_command(&bin, "pg_ctl", root);
            stop.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = run(stop, "pg_ctl stop");
        }
    }

    // Nothing usable: start afresh.
    let _ = fs::remove_dir_all(&pg);
    fs::create_dir_all(&pg).map_err(|e| err(format!("create {}: {e}", pg.display())))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&pg);
                c
            },
            "chown the cluster directory to postgres",
        )?;
    }
    let mut initdb = pg_command(&bin, "initdb", root);
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb")?;

    let port = free_port()?;
    let conf = format!(
        "\n# duroxide-pg throwaway test cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{sock}'\nmax_connections = 500\nshared_buffers = 256MB\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n\
         log_min_messages = warning\nlog_min_error_statement = panic\n",
        sock = pg.display()
    );
    let conf_path = data.join("postgresql.conf");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&conf_path)
        .map_err(|e| err(format!("open {}: {e}", conf_path.display())))?;
    f.write_all(conf.as_bytes())
        .map_err(|e| err(format!("write postgresql.conf: {e}")))?;

    let mut start = pg_command(&bin, "pg_ctl", root);
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(pg.join("server.log"))
        .args(["-w", "-t", "60", "start"]);
    run(start, "pg_ctl start")?;
    fs::write(&port_file, port.to_string()).map_err(|e| err(format!("write port file: {e}")))?;
    spawn_watchdog(base, &bin, root)?;
    wait_ready(port)?;
    Ok(url(&port.to_string()))
}

fn url(port: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("find a free port: {e}")))
}

fn wait_ready(port: u16) -> Result<(), ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(err(format!(
        "server did not accept connections on port {port}"
    )))
}

/// Starts the detached watchdog that stops the cluster once unused.
fn spawn_watchdog(base: &Path, bin: &Path, root: bool) -> Result<(), ClusterError> {
    let as_pg = if root { "runuser -u postgres -- " } else { "" };
    let script = format!(
        r#"cd '{base}' || exit 0
idle=0
while sleep 2; do
  if flock -x setup.lock sh -c 'if flock -n -x users.lock true; then exit 0; else exit 1; fi'; then
    idle=$((idle+2))
  else
    idle=0
  fi
  if [ "$idle" -ge {IDLE_SECONDS} ]; then
    flock -x setup.lock sh -c 'flock -n -x users.lock true || exit 1; {as_pg}"{bin}/pg_ctl" -D pg/data -m fast -w stop >/dev/null 2>&1; rm -rf pg port'
    [ -d pg ] || exit 0
    idle=0
  fi
done
"#,
        base = base.display(),
        bin = bin.display(),
    );
    Command::new("setsid")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            err(format!(
                "start the cluster watchdog (needs setsid and flock from util-linux): {e}"
            ))
        })?;
    Ok(())
}
