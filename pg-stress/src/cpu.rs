//! CPU time around a run: the PostgreSQL server's (every process of its
//! cluster, backends that exited included) and this process's (the client:
//! duroxide's runtime and the provider under test).
//!
//! Why the server's: on a machine whose cores the server saturates, its CPU
//! per completed orchestration is what a provider can still save; throughput
//! alone hides it. Read from Linux's `/proc`, so only for a server on this
//! machine (the throwaway cluster, or a local durable one):
//! - the postmaster's own time plus its reaped children's (`cutime`,
//!   `cstime` of `/proc/<postmaster>/stat`): every backend that exited;
//! - each live child's own time (`utime`, `stime`): the backends, walwriter,
//!   checkpointer, autovacuum.
//!
//! A child that exits between the two reads is missed in that sample (a few
//! ms at most, against seconds per run). A pooler in front of the server
//! (`--via-pgbouncer`) is a process of its own: its CPU is not counted.

use std::time::Duration;

/// Kernel clock ticks per second of the `/proc` time fields (`USER_HZ`,
/// fixed at 100 by the kernel's ABI on every architecture this runs on).
const TICKS_PER_SECOND: u64 = 100;

/// The processes of one local PostgreSQL cluster.
#[derive(Debug, Clone, Copy)]
pub struct ServerProcesses {
    postmaster: u32,
}

/// The fields of `/proc/<pid>/stat` this module reads.
struct Stat {
    ppid: u32,
    /// utime + stime, in ticks.
    own: u64,
    /// cutime + cstime (children reaped), in ticks.
    children: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing parenthesis (field 3 first).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
    })
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

impl ServerProcesses {
    /// The cluster whose backend has process id `backend_pid`
    /// (`SELECT pg_backend_pid()`) and whose postmaster started at
    /// `started_ms` (`pg_postmaster_start_time()`, ms since the epoch), when
    /// it runs on this machine: the local process of that id must be a
    /// `postgres` whose parent is a `postgres` started within two seconds of (the boot time is in whole seconds)
    /// that time. `None` for a remote server or one in another process
    /// namespace, where the id names some other process.
    pub fn of_backend(backend_pid: u32, started_ms: i64) -> Option<Self> {
        if !is_postgres(backend_pid) {
            return None;
        }
        let postmaster = read_stat(backend_pid)?.ppid;
        let started_here = start_time_ms(postmaster)?;
        (is_postgres(postmaster) && (started_here - started_ms).abs() <= 2000)
            .then_some(Self { postmaster })
    }

    /// Finds the cluster behind `url` (one connection, closed again; at
    /// most 10 s). A simple query, nothing prepared: behind a transaction
    /// pooler a named statement would stay on a server session another
    /// client gets.
    pub async fn locate(url: &str) -> Option<Self> {
        use sqlx::{Connection, Executor, Row};
        let ask = async {
            let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
            let row = conn
                .fetch_one(
                    "SELECT pg_backend_pid()::text,
                            (extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint::text",
                )
                .await
                .ok()?;
            let pid: String = row.try_get(0).ok()?;
            let started: String = row.try_get(1).ok()?;
            // While the backend still exists: it exits when the connection closes.
            let found = Self::of_backend(pid.parse().ok()?, started.parse().ok()?);
            let _ = conn.close().await;
            found
        };
        tokio::time::timeout(Duration::from_secs(10), ask)
            .await
            .ok()
            .flatten()
    }

    /// CPU time the cluster has used so far: the postmaster's, its exited
    /// children's and its live children's. `None` once the postmaster is gone.
    pub fn cpu(&self) -> Option<Duration> {
        let postmaster = read_stat(self.postmaster)?;
        let mut ticks = postmaster.own + postmaster.children;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(child) = read_stat(pid).filter(|s| s.ppid == self.postmaster) {
                ticks += child.own;
            }
        }
        Some(ticks_to_duration(ticks))
    }
}

/// When process `pid` started, ms since the epoch: its start time after boot
/// (`/proc/<pid>/stat` field 22, in ticks) plus the boot time (`btime` of
/// `/proc/stat`).
fn start_time_ms(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let ticks: i64 = rest.split(' ').nth(22 - 3)?.parse().ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot * 1000 + ticks * 1000 / TICKS_PER_SECOND as i64)
}

/// CPU time this process has used so far (all its threads).
pub fn own_cpu() -> Option<Duration> {
    read_stat(std::process::id()).map(|s| ticks_to_duration(s.own))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// CPU used between two readings, in ms per completed orchestration
/// (`None` without both readings or without a completion).
pub fn ms_per_orchestration(
    before: Option<Duration>,
    after: Option<Duration>,
    completed: usize,
) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (completed > 0).then(|| used.as_secs_f64() * 1000.0 / completed as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_a_server_and_its_own_cpu_grows() {
        assert!(ServerProcesses::of_backend(std::process::id(), 0).is_none());
        let before = own_cpu().expect("/proc/self/stat");
        let until = std::time::Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = own_cpu().expect("/proc/self/stat");
        assert!(
            after >= before + Duration::from_millis(150),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn per_orchestration_needs_both_readings_and_a_completion() {
        let s = |ms| Some(Duration::from_millis(ms));
        assert_eq!(ms_per_orchestration(s(1000), s(3000), 100), Some(20.0));
        assert_eq!(ms_per_orchestration(None, s(3000), 100), None);
        assert_eq!(ms_per_orchestration(s(1000), s(3000), 0), None);
        assert_eq!(ms_per_orchestration(s(3000), s(1000), 10), None);
    }

    /// The throwaway cluster (whatever `DATABASE_URL` says) runs on this
    /// machine: it is found, and a query
    /// that burns server CPU shows in its total.
    #[tokio::test]
    async fn the_local_cluster_is_found_and_its_cpu_counted() {
        let url = duroxide_pg_testkit::local_cluster::local_url().expect("cluster");
        let server = ServerProcesses::locate(&url)
            .await
            .expect("a local cluster");
        let before = server.cpu().expect("postmaster");
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT count(*) FROM generate_series(1, 3000000)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        // The backend has exited: its time is now the postmaster's reaped
        // children's, once the postmaster has reaped it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let after = server.cpu().expect("postmaster");
            if after >= before + Duration::from_millis(100) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{before:?} -> {after:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
