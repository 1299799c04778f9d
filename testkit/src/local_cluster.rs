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

/// Layout of the shared cluster: a running cluster set up by a build with an
/// older layout is replaced (3: a test CA and a TLS server certificate; 5: the
/// watchdog also stops the PgBouncer of [`pgbouncer_url`]).
const CLUSTER_LAYOUT: &str = "5";

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
    local_url()
}

/// The shared throwaway cluster's URL (started on first use), whatever
/// `DATABASE_URL` says: for tests that need what only that cluster has
/// (its roles, certificates, `pg_stat_statements`, the PgBouncer in front).
///
/// # Errors
/// As [`database_url`].
pub fn local_url() -> Result<String, ClusterError> {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| join_or_start().map_err(|e| e.0))
        .clone()
        .map_err(ClusterError)
}

/// The URL of a real PgBouncer (the Debian package `pgbouncer`, 1.18 here)
/// in transaction pooling mode in front of the shared throwaway cluster,
/// started on first use on a free loopback port and stopped with the
/// cluster. Like PgBouncer setups in production it ignores the startup
/// parameters `options` and `extra_float_digits` (it would refuse the login
/// otherwise) and shares a few server connections among all clients.
///
/// # Errors
/// [`ClusterError`] when the cluster cannot start or `pgbouncer` is not
/// installed (the message says what to install).
pub fn pgbouncer_url() -> Result<String, ClusterError> {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let cluster = local_url().map_err(|e| e.0)?;
            join_or_start_pgbouncer(&cluster).map_err(|e| e.0)
        })
        .clone()
        .map_err(ClusterError)
}

/// Where Debian installs PgBouncer.
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// How many server connections PgBouncer opens per database and user: far
/// fewer than the clients a test run opens, so they really share sessions.
const PGBOUNCER_POOL_SIZE: u32 = 20;

fn join_or_start_pgbouncer(cluster_url: &str) -> Result<String, ClusterError> {
    let cluster_port = cluster_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .ok_or_else(|| err(format!("no port in {cluster_url}")))?
        .to_string();
    let base = base_dir();
    let setup = lock_file(&base.join("setup.lock"))?;
    setup.lock().map_err(|e| err(format!("lock setup: {e}")))?;
    let result = ensure_pgbouncer(&base, &cluster_port);
    drop(setup);
    result
}

fn ensure_pgbouncer(base: &Path, cluster_port: &str) -> Result<String, ClusterError> {
    let dir = base.join("bouncer");
    let port_file = dir.join("port");
    let pid_file = dir.join("pgbouncer.pid");
    if let (Ok(port), Ok(pid)) = (
        fs::read_to_string(&port_file),
        fs::read_to_string(&pid_file),
    ) && Path::new(&format!("/proc/{}", pid.trim())).exists()
    {
        return Ok(url(port.trim()));
    }
    let _ = fs::remove_dir_all(&dir);
    let port = free_port()?;
    launch_pgbouncer(&dir, cluster_port, port)?;
    fs::write(&port_file, port.to_string())
        .map_err(|e| err(format!("write PgBouncer port file: {e}")))?;
    Ok(url(&port.to_string()))
}

/// Writes a PgBouncer configuration in `dir` (transaction pooling in front
/// of the cluster on `cluster_port`, listening on `port`) and starts it
/// as a daemon, as `postgres` when run as root (it refuses root, like
/// PostgreSQL). Returns once the port accepts connections.
fn launch_pgbouncer(dir: &Path, cluster_port: &str, port: u16) -> Result<(), ClusterError> {
    if !Path::new(PGBOUNCER).exists() {
        return Err(err(format!(
            "{PGBOUNCER} not found: install the Debian package `pgbouncer` (apt-get install pgbouncer)"
        )));
    }
    fs::create_dir_all(dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    let ini = format!(
        "[databases]\n* = host=127.0.0.1 port={cluster_port}\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\nmax_client_conn = 2000\n\
         default_pool_size = {PGBOUNCER_POOL_SIZE}\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         admin_users = postgres\nstats_users = postgres\n\
         logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
        dir = dir.display()
    );
    fs::write(dir.join("pgbouncer.ini"), ini)
        .map_err(|e| err(format!("write pgbouncer.ini: {e}")))?;
    fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n")
        .map_err(|e| err(format!("write userlist.txt: {e}")))?;
    let root = is_root();
    let mut start = if root {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(dir);
                c
            },
            "chown the PgBouncer directory to postgres",
        )?;
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", PGBOUNCER]);
        c
    } else {
        Command::new(PGBOUNCER)
    };
    start.arg("-d").arg(dir.join("pgbouncer.ini"));
    run(start, "start pgbouncer")?;
    wait_ready(port)
}

/// A PgBouncer of its own in front of a [`PrivateCluster`], for tests that
/// restart it. Stopped when dropped.
pub struct PrivateBouncer {
    dir: PathBuf,
    cluster_port: u16,
    port: u16,
}

impl PrivateBouncer {
    /// Its URL (user `postgres`, database `postgres`).
    pub fn url(&self) -> String {
        url(&self.port.to_string())
    }

    /// Stops it at once (SIGINT would wait for clients; SIGTERM drops every
    /// client and server connection now), then starts it again on the same
    /// port, as an operator restarting the pooler does.
    ///
    /// # Errors
    /// When it cannot be stopped or started.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop();
        launch_pgbouncer(&self.dir, &self.cluster_port.to_string(), self.port)
    }

    fn stop(&self) {
        let pid_file = self.dir.join("pgbouncer.pid");
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            let pid = pid.trim().to_string();
            let _ = Command::new("kill").arg(&pid).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PrivateBouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
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

    let version_file = base.join("version");
    if data.join("postmaster.pid").exists() {
        let mut status = pg_command(&bin, "pg_ctl", root);
        status.arg("status").arg("-D").arg(&data);
        if run(status, "pg_ctl status").is_ok() {
            let current =
                fs::read_to_string(&version_file).is_ok_and(|v| v.trim() == CLUSTER_LAYOUT);
            if let Ok(port) = fs::read_to_string(&port_file)
                && current
            {
                return Ok(url(port.trim()));
            }
            // Running but unusable (no port recorded, or set up by an older
            // build without what tests now expect): stop it, start afresh.
            let mut stop = pg_command(&bin, "pg_ctl", root);
            stop.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = run(stop, "pg_ctl stop");
        }
    }

    // Nothing usable: start afresh.
    let port = free_port()?;
    create_cluster(&bin, root, &pg, port)?;
    start_server(&bin, root, &pg)?;
    fs::write(&port_file, port.to_string()).map_err(|e| err(format!("write port file: {e}")))?;
    fs::write(&version_file, CLUSTER_LAYOUT)
        .map_err(|e| err(format!("write version file: {e}")))?;
    spawn_watchdog(base, &bin, root)?;
    wait_ready(port)?;
    Ok(url(&port.to_string()))
}

/// Creates a cluster in `pg/data` listening on `port`: initdb, our settings,
/// and TLS (a throwaway CA, `ca.crt`, and a server certificate it signs) so
/// TLS can be tested; plain connections keep working.
fn create_cluster(bin: &Path, root: bool, pg: &Path, port: u16) -> Result<(), ClusterError> {
    let data = pg.join("data");
    let _ = fs::remove_dir_all(pg);
    fs::create_dir_all(pg).map_err(|e| err(format!("create {}: {e}", pg.display())))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(pg);
                c
            },
            "chown the cluster directory to postgres",
        )?;
    }
    let mut initdb = pg_command(bin, "initdb", root);
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

    // A throwaway CA, a server certificate it signs (for localhost and
    // 127.0.0.1, not 127.0.0.2: the host-name mismatch case), and a client
    // certificate for the role TEST_CERT_USER; made as the server's user so
    // the keys have the owner and mode (0600) PostgreSQL insists on.
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=duroxide-pg-test-ca \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile server.ext -out server.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=dxtest_cert -keyout client.key -out client.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile client.ext -out client.crt 2>/dev/null
chmod 600 server.key ca.key client.key";
    let mut cert = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    cert.current_dir(&data);
    let ssl = match run(cert, "openssl (test TLS certificates)") {
        Ok(()) => {
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.crt'\n"
        }
        Err(_) => "", // no openssl: TLS tests report the missing certificate
    };

    let conf = format!(
        "\n# duroxide-pg throwaway test cluster\nport = {port}\nlisten_addresses = '127.0.0.1,127.0.0.2'\n\
         unix_socket_directories = '{sock}'\nmax_connections = 500\nshared_buffers = 256MB\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n\
         log_min_messages = warning\nlog_min_error_statement = panic\n{ssl}",
        sock = pg.display()
    );
    let conf_path = data.join("postgresql.conf");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&conf_path)
        .map_err(|e| err(format!("open {}: {e}", conf_path.display())))?;
    f.write_all(conf.as_bytes())
        .map_err(|e| err(format!("write postgresql.conf: {e}")))?;

    // Everyone is trusted except two kinds of test roles, first match wins:
    // TEST_CERT_USER must present a client certificate, and members of
    // TEST_PASSWORD_GROUP must give their password (rotation, .pgpass tests).
    let hba_path = data.join("pg_hba.conf");
    let trusted = fs::read_to_string(&hba_path)
        .map_err(|e| err(format!("read {}: {e}", hba_path.display())))?;
    let hba = format!(
        "hostssl all {TEST_CERT_USER} 127.0.0.0/8 cert\n\
         host all {TEST_CERT_USER} 127.0.0.0/8 reject\n\
         host all +{TEST_PASSWORD_GROUP} 127.0.0.0/8 scram-sha-256\n{trusted}"
    );
    fs::write(&hba_path, hba).map_err(|e| err(format!("write pg_hba.conf: {e}")))?;
    Ok(())
}

/// The role the throwaway cluster admits only with the client certificate
/// [`test_client_certificate`] (CN = this name). Tests create the role.
pub const TEST_CERT_USER: &str = "dxtest_cert";

/// Members of this role must log in to the throwaway cluster with their
/// password (scram-sha-256); every other role is trusted. Tests create it.
pub const TEST_PASSWORD_GROUP: &str = "dxtest_password_required";

/// The client certificate and key (PEM files) the throwaway CA issued for
/// [`TEST_CERT_USER`]; `None` as for [`test_ca_certificate`].
pub fn test_client_certificate() -> Option<(PathBuf, PathBuf)> {
    let ca = test_ca_certificate()?;
    let (cert, key) = (
        ca.with_file_name("client.crt"),
        ca.with_file_name("client.key"),
    );
    (cert.exists() && key.exists()).then_some((cert, key))
}

/// One process, as `/proc/<pid>` describes it.
struct Process {
    pid: i32,
    /// `Z`: dead, not yet reaped (a zombie).
    state: char,
    ppid: i32,
    pgrp: i32,
    /// The command line, arguments separated by NUL.
    cmdline: String,
}

/// The machine's processes (those that vanish while being read are left out).
fn processes() -> impl Iterator<Item = Process> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            let cmdline = fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            Some(Process {
                pid,
                state,
                ppid,
                pgrp,
                cmdline,
            })
        })
}

/// `kill <sig> -- <target>` (a pid, or `-pgid` for a process group).
fn signal(sig: &str, target: &str) -> Result<(), ClusterError> {
    let mut kill = Command::new("kill");
    kill.args([sig, "--", target]);
    run(kill, &format!("kill {sig} {target}"))
}

/// Appends `text` to `data/postgresql.conf` (later settings win).
fn append_conf(data: &Path, text: &str) -> Result<(), ClusterError> {
    let path = data.join("postgresql.conf");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| err(format!("write {}: {e}", path.display())))
}

/// Starts the server of `pg/data`, logging to `pg/server.log`, and waits
/// until it accepts connections.
fn start_server(bin: &Path, root: bool, pg: &Path) -> Result<(), ClusterError> {
    let mut start = pg_command(bin, "pg_ctl", root);
    start
        .arg("-D")
        .arg(pg.join("data"))
        .arg("-l")
        .arg(pg.join("server.log"))
        .args(["-w", "-t", "60", "start"]);
    run(start, "pg_ctl start")
}

/// The shared cluster's server log (`None` when `DATABASE_URL` is set and no
/// local cluster is in use). Tests read it, e.g. to prove no deadlock was logged.
pub fn server_log() -> Option<PathBuf> {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        return None;
    }
    Some(base_dir().join("pg").join("server.log"))
}

/// The certificate of the throwaway CA that signed the shared cluster's
/// server certificate, for `sslrootcert` (the cluster is started if need be,
/// whatever `DATABASE_URL` says: see [`local_url`]); `None` when the cluster
/// cannot start or no certificate could be made (no `openssl`).
pub fn test_ca_certificate() -> Option<PathBuf> {
    local_url().ok()?;
    Some(base_dir().join("pg").join("data").join("ca.crt")).filter(|p| p.exists())
}

/// A cluster of its own, for tests that restart, stop or break the server
/// (which would disturb every other test on the shared one). Stopped and
/// removed when dropped.
pub struct PrivateCluster {
    bin: PathBuf,
    root: bool,
    dir: PathBuf,
    port: u16,
    /// Held (shared) for the cluster's life: if this process dies without
    /// dropping it (a test killed for its timeout), the lock goes with the
    /// process and the watchdog stops the cluster ~20 s later.
    _users: File,
}

impl PrivateCluster {
    /// Creates and starts a new cluster under the temp directory, tuned for
    /// speed like the shared one (`fsync=off`).
    ///
    /// # Errors
    /// As [`database_url`].
    pub fn start() -> Result<Self, ClusterError> {
        let cluster = Self::create()?;
        create_cluster(&cluster.bin, cluster.root, &cluster.pg(), cluster.port)?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// As [`PrivateCluster::start`], but durable as a production server is:
    /// `fsync`, `synchronous_commit` and `full_page_writes` on. For crash
    /// and failover tests, where what was acknowledged must survive.
    ///
    /// # Errors
    /// As [`database_url`].
    pub fn start_durable() -> Result<Self, ClusterError> {
        let cluster = Self::create()?;
        create_cluster(&cluster.bin, cluster.root, &cluster.pg(), cluster.port)?;
        append_conf(
            &cluster.pg().join("data"),
            "\n# durable (crash and failover tests)\nfsync = on\nsynchronous_commit = on\n\
             full_page_writes = on\n",
        )?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// A hot standby of `primary` (`pg_basebackup -R`, streaming
    /// replication), started. With `synchronous`, `primary` then waits for
    /// it on every commit (`synchronous_standby_names = '*'`, reloaded):
    /// nothing `primary` acknowledged can be missing here.
    ///
    /// # Errors
    /// When the base backup or the start fails.
    pub fn standby_of(primary: &PrivateCluster, synchronous: bool) -> Result<Self, ClusterError> {
        let cluster = Self::create()?;
        let pg = cluster.pg();
        fs::create_dir_all(&pg).map_err(|e| err(format!("create {}: {e}", pg.display())))?;
        if cluster.root {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(&pg);
            run(c, "chown the standby directory to postgres")?;
        }
        let mut backup = pg_command(&cluster.bin, "pg_basebackup", cluster.root);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(pg.join("data"))
            .args(["-R", "-X", "stream", "-c", "fast"]);
        run(backup, "pg_basebackup")?;
        append_conf(
            &pg.join("data"),
            &format!(
                "\n# standby of port {}\nport = {}\nunix_socket_directories = '{}'\n",
                primary.port,
                cluster.port,
                pg.display()
            ),
        )?;
        cluster.launch()?;
        if synchronous {
            append_conf(
                &primary.pg().join("data"),
                "\nsynchronous_standby_names = '*'\n",
            )?;
            let mut reload = pg_command(&cluster.bin, "pg_ctl", cluster.root);
            reload
                .arg("-D")
                .arg(primary.pg().join("data"))
                .arg("reload");
            run(reload, "pg_ctl reload")?;
        }
        Ok(cluster)
    }

    /// The directory, lock and port of a new cluster, nothing created yet.
    fn create() -> Result<Self, ClusterError> {
        let bin = bin_dir()?;
        let root = is_root();
        let dir = std::env::temp_dir().join(format!(
            "duroxide-pg-private-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let port = free_port()?;
        fs::create_dir_all(&dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
        let users = lock_file(&dir.join("users.lock"))?;
        users
            .lock_shared()
            .map_err(|e| err(format!("lock users: {e}")))?;
        Ok(Self {
            bin,
            root,
            dir,
            port,
            _users: users,
        })
    }

    /// Starts the created cluster and its watchdog, and waits until it
    /// accepts connections.
    fn launch(&self) -> Result<(), ClusterError> {
        start_server(&self.bin, self.root, &self.pg())?;
        spawn_watchdog(&self.dir, &self.bin, self.root)?;
        wait_ready(self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the whole server at once, `kill -9` of the postmaster's process
    /// group (the postmaster and every backend), as a power cut or an OOM
    /// kill would: no shutdown checkpoint, nothing flushed that was not
    /// already. Returns when no process of it is left.
    ///
    /// # Errors
    /// When the server is not running or the processes do not go.
    pub fn kill_9(&self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid()?;
        // pg_ctl starts the postmaster in a session of its own: its process
        // group is the server.
        signal("-KILL", &format!("-{pid}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes().any(|p| p.pgrp == pid && p.state != 'Z') {
            if Instant::now() > deadline {
                return Err(err(format!(
                    "server processes of {pid} alive after kill -9"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // This machine's init reaps orphans only every few seconds; until
        // then the dead postmaster is a zombie, and a restart would take its
        // lock files (data directory, socket) for a running server. An init
        // that reaps at once (what servers run) leaves stale files the
        // restart ignores: do the same.
        let _ = fs::remove_file(self.pg().join("data").join("postmaster.pid"));
        let _ = fs::remove_file(self.pg().join(format!(".s.PGSQL.{}.lock", self.port)));
        Ok(())
    }

    /// The postmaster's pid (the first line of `postmaster.pid`).
    fn postmaster_pid(&self) -> Result<i32, ClusterError> {
        let path = self.pg().join("data").join("postmaster.pid");
        fs::read_to_string(&path)
            .map_err(|e| err(format!("read {}: {e}", path.display())))?
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| err(format!("no pid in {}", path.display())))
    }

    /// The pid of this standby's WAL receiver.
    fn walreceiver(&self) -> Result<i32, ClusterError> {
        let postmaster = self.postmaster_pid()?;
        processes()
            .find(|p| p.ppid == postmaster && p.cmdline.starts_with("postgres: walreceiver"))
            .map(|p| p.pid)
            .ok_or_else(|| err("no walreceiver process: is this a streaming standby?"))
    }

    /// The pid of this standby's startup process (the one replaying WAL).
    fn startup_process(&self) -> Result<i32, ClusterError> {
        let postmaster = self.postmaster_pid()?;
        processes()
            .find(|p| {
                p.ppid == postmaster && p.state != 'Z' && p.cmdline.starts_with("postgres: startup")
            })
            .map(|p| p.pid)
            .ok_or_else(|| err("no startup process: is this server in recovery?"))
    }

    /// Stops this standby's WAL receiver (SIGSTOP): from now on it receives
    /// nothing, as a standby lagging behind a busy primary. With
    /// asynchronous replication the primary's commits do not wait for it.
    ///
    /// # Errors
    /// When no WAL receiver runs.
    pub fn pause_replication(&self) -> Result<(), ClusterError> {
        signal("-STOP", &self.walreceiver()?.to_string())
    }

    /// Ends a [`PrivateCluster::pause_replication`] by killing the stopped
    /// WAL receiver (SIGKILL): what it had not written is gone, including
    /// what waits in its socket. The standby restarts its processes and
    /// stays in recovery; call this once its primary is dead, then promote.
    /// Returns once the restart is done.
    ///
    /// # Errors
    /// When no WAL receiver runs, or the standby does not restart within
    /// 60 s.
    pub fn drop_paused_replication(&self) -> Result<(), ClusterError> {
        let startup = self.startup_process()?;
        signal("-KILL", &self.walreceiver()?.to_string())?;
        // To the postmaster a child killed by a signal has crashed: it stops
        // every process and starts recovery again. Until a new startup
        // process runs it drops a promotion request (it forwards one only to
        // a running recovery), so `pg_ctl promote` would wait in vain; and
        // its port accepts connections throughout, so the port alone does
        // not show the restart is over.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.startup_process(), Ok(pid) if pid != startup) {
            if Instant::now() > deadline {
                return Err(err(
                    "the standby did not restart its recovery within 60 s of losing its WAL receiver",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_ready(self.port)
    }

    /// Promotes this standby to primary (`pg_ctl promote -w`).
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn promote(&self) -> Result<(), ClusterError> {
        let mut c = pg_command(&self.bin, "pg_ctl", self.root);
        c.arg("-D")
            .arg(self.pg().join("data"))
            .args(["-w", "-t", "60", "promote"]);
        run(c, "pg_ctl promote")
    }

    fn pg(&self) -> PathBuf {
        self.dir.join("pg")
    }

    /// Its connection URL.
    pub fn url(&self) -> String {
        url(&self.port.to_string())
    }

    /// A PgBouncer of its own in front of this cluster (transaction
    /// pooling, as [`pgbouncer_url`]'s).
    ///
    /// # Errors
    /// When `pgbouncer` is not installed or does not start.
    pub fn pgbouncer(&self) -> Result<PrivateBouncer, ClusterError> {
        let bouncer = PrivateBouncer {
            dir: self.dir.join("bouncer"),
            cluster_port: self.port,
            port: free_port()?,
        };
        launch_pgbouncer(&bouncer.dir, &self.port.to_string(), bouncer.port)?;
        Ok(bouncer)
    }

    /// Its server log.
    pub fn log(&self) -> PathBuf {
        self.pg().join("server.log")
    }

    /// `pg_ctl stop -m fast`: every connection is closed, the server is down.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut c = pg_command(&self.bin, "pg_ctl", self.root);
        c.arg("-D")
            .arg(self.pg().join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// Starts the server again after [`PrivateCluster::stop`].
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        start_server(&self.bin, self.root, &self.pg()).map_err(|e| {
            let log = fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            err(format!("{}; server log ends:\n{}", e.0, tail.join("\n")))
        })?;
        wait_ready(self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is closed, the server comes back.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn restart(&self) -> Result<(), ClusterError> {
        let mut c = pg_command(&self.bin, "pg_ctl", self.root);
        c.arg("-D")
            .arg(self.pg().join("data"))
            .arg("-l")
            .arg(self.log())
            .args(["-m", "fast", "-w", "-t", "60", "restart"]);
        run(c, "pg_ctl restart")?;
        wait_ready(self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut c = pg_command(&self.bin, "pg_ctl", self.root);
        c.arg("-D")
            .arg(self.pg().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = run(c, "pg_ctl stop");
        let _ = fs::remove_dir_all(&self.dir);
    }
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
  [ -d pg ] || exit 0
  if flock -x setup.lock sh -c 'if flock -n -x users.lock true; then exit 0; else exit 1; fi'; then
    idle=$((idle+2))
  else
    idle=0
  fi
  if [ "$idle" -ge {IDLE_SECONDS} ]; then
    flock -x setup.lock sh -c 'flock -n -x users.lock true || exit 1; [ -f bouncer/pgbouncer.pid ] && kill "$(cat bouncer/pgbouncer.pid)"; {as_pg}"{bin}/pg_ctl" -D pg/data -m fast -w stop >/dev/null 2>&1; rm -rf pg port version bouncer'
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Killing a paused WAL receiver makes the standby's postmaster restart
    /// every process (a crashed child); a promotion asked for during that
    /// restart is dropped. So `drop_paused_replication` must return only
    /// once a new startup process runs, and the promotion after it must
    /// succeed (stop 30's CI: `pg_ctl promote` waited 60 s in vain).
    #[test]
    fn a_standby_whose_paused_replication_was_dropped_has_restarted_and_promotes() {
        let primary = PrivateCluster::start().expect("primary");
        let standby = PrivateCluster::standby_of(&primary, false).expect("standby");
        standby.pause_replication().expect("pause");
        primary.kill_9().expect("kill -9 the primary");
        let startup = standby.startup_process().expect("a startup process");
        standby.drop_paused_replication().expect("drop");
        let after = standby
            .startup_process()
            .expect("a startup process after the drop");
        assert_ne!(after, startup, "the standby had not restarted yet");
        standby.promote().expect("promote");
    }
}
