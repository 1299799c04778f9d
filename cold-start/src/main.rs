//! `cold-start`: how fast a fresh process gets going with duroxide-pg,
//! against the published duroxide-pg 0.1.38.
//!
//! Every sample is a new process (`cold-start sample …`), so nothing is warm:
//! not the TLS stack, not the connections, not the server's plan caches for
//! the session. One sample measures, on a schema of its own:
//!
//! 1. construction on a fresh schema (creates it, runs every migration);
//! 2. from construction's return: `Runtime::start` (default options) and
//!    `start_orchestration` of a one-activity orchestration until the client
//!    sees it (`get_orchestration_status` is no longer `NotFound`: the first
//!    turn committed) and until it completed;
//! 3. construction again on the now up-to-date schema.
//!
//! `cold-start run` drives the samples, interleaving providers and TLS modes
//! (`sslmode=disable` / `sslmode=require`), and prints medians. Each provider
//! runs from a build as its users would have it: ours from a build without
//! the `published` feature (rustls), the published crate from a build with
//! it (which brings sqlx's native-tls, OpenSSL, for every provider in that
//! binary, since cargo unifies features):
//!
//! ```sh
//! cargo build -p duroxide-pg-cold-start && cp target/debug/cold-start /tmp/cold-ours
//! cargo build -p duroxide-pg-cold-start --features published
//! /tmp/cold-ours run --samples 7 --published-bin target/debug/cold-start
//! ```

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};

#[derive(Parser)]
#[command(name = "cold-start", about = "Cold-start latency of duroxide-pg")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One sample in this process; prints one JSON line.
    Sample {
        #[arg(long, value_enum)]
        provider: Kind,
        /// TLS on (`sslmode=require`) or off (`sslmode=disable`).
        #[arg(long, value_enum)]
        tls: Tls,
        /// Server (default: `DATABASE_URL`, else the throwaway local cluster).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Runs samples in child processes, interleaved; prints the medians.
    Run {
        /// Samples per provider and TLS mode.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// A build of this binary with `--features published`: also measure
        /// the published crate, from that build.
        #[arg(long)]
        published_bin: Option<std::path::PathBuf>,
        /// Server (default: `DATABASE_URL`, else the throwaway local cluster).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Ours,
    Published,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tls {
    On,
    Off,
}

/// The TLS stack sqlx uses in this binary.
const TLS_STACK: &str = if cfg!(feature = "published") {
    "native-tls (OpenSSL)"
} else {
    "rustls"
};

/// A store's handle, to close it and drop its schema.
enum Store {
    Ours(Arc<duroxide_pg::PostgresProvider>),
    #[cfg(feature = "published")]
    Published(Arc<duroxide_pg_published::PostgresProvider>),
}

impl Store {
    async fn open(
        kind: Kind,
        url: &str,
        schema: &str,
    ) -> Result<(Arc<dyn Provider>, Self), String> {
        match kind {
            Kind::Ours => {
                let p = Arc::new(
                    duroxide_pg::PostgresProvider::new_with_schema(url, Some(schema))
                        .await
                        .map_err(|e| e.to_string())?,
                );
                Ok((p.clone(), Self::Ours(p)))
            }
            #[cfg(feature = "published")]
            Kind::Published => {
                let p = Arc::new(
                    duroxide_pg_published::PostgresProvider::new_with_schema(url, Some(schema))
                        .await
                        .map_err(|e| e.to_string())?,
                );
                Ok((p.clone(), Self::Published(p)))
            }
            #[cfg(not(feature = "published"))]
            Kind::Published => {
                Err("this build has no published crate (--features published)".into())
            }
        }
    }

    async fn close(&self) {
        match self {
            Self::Ours(p) => p.close().await,
            #[cfg(feature = "published")]
            Self::Published(p) => p.pool().close().await,
        }
    }

    async fn drop_schema(&self) -> Result<(), String> {
        match self {
            Self::Ours(p) => p.cleanup_schema().await.map_err(|e| e.to_string()),
            #[cfg(feature = "published")]
            Self::Published(p) => p.cleanup_schema().await.map_err(|e| e.to_string()),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One sample: the four times in milliseconds.
async fn sample(kind: Kind, url: &str) -> Result<[f64; 4], String> {
    let schema = format!("dxstress_cold_{}", std::process::id());
    let t0 = Instant::now();
    let (provider, store) = Store::open(kind, url, &schema).await?;
    let construct_fresh = t0.elapsed();

    let activities = ActivityRegistry::builder()
        .register("Greet", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("Hello, {name}!"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Hello",
            |ctx: OrchestrationContext, name: String| async move {
                ctx.schedule_activity("Greet", name).await
            },
        )
        .build();
    let t1 = Instant::now();
    let rt = Runtime::start_with_options(
        provider.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await;
    let client = Client::new(provider.clone());
    client
        .start_orchestration("cold-1", "Hello", "world")
        .await
        .map_err(|e| e.to_string())?;
    let first_turn = loop {
        let status = client
            .get_orchestration_status("cold-1")
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(status, OrchestrationStatus::NotFound) {
            break t1.elapsed();
        }
        if t1.elapsed() > Duration::from_secs(30) {
            return Err("the first turn did not commit within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let completed = match client
        .wait_for_orchestration("cold-1", Duration::from_secs(30))
        .await
    {
        Ok(OrchestrationStatus::Completed { .. }) => t1.elapsed(),
        other => return Err(format!("the first orchestration ended {other:?}")),
    };
    rt.shutdown(None).await;
    store.close().await;

    let t2 = Instant::now();
    let (_again, again) = Store::open(kind, url, &schema).await?;
    let construct_up_to_date = t2.elapsed();
    let dropped = again.drop_schema().await;
    again.close().await;
    dropped?;
    Ok([
        ms(construct_fresh),
        ms(first_turn),
        ms(completed),
        ms(construct_up_to_date),
    ])
}

fn base_url(given: Option<String>) -> Result<String, String> {
    match given {
        Some(u) if !u.trim().is_empty() => Ok(u),
        _ => duroxide_pg_testkit::local_cluster::database_url().map_err(|e| e.to_string()),
    }
}

fn with_sslmode(url: &str, tls: Tls) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mode = match tls {
        Tls::On => "require",
        Tls::Off => "disable",
    };
    format!("{url}{sep}sslmode={mode}")
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Ours => "ours",
        Kind::Published => "published",
    }
}

fn tls_name(tls: Tls) -> &'static str {
    match tls {
        Tls::On => "on",
        Tls::Off => "off",
    }
}

/// Runs one sample in a child process of `bin`; its four times.
async fn child_sample(
    bin: &std::path::Path,
    kind: Kind,
    tls: Tls,
    url: &str,
) -> Result<[f64; 4], String> {
    let out = tokio::process::Command::new(bin)
        .args(["sample", "--provider", name(kind), "--tls", tls_name(tls)])
        .arg("--database-url")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} sample failed: {}",
            name(kind),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let line: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable sample output: {e}"))?;
    if kind == Kind::Ours && line["tls_stack"] != "rustls" {
        return Err("measure ours from a build without --features published (rustls)".into());
    }
    let times = line["ms"].as_array().ok_or("no times in sample output")?;
    let mut out = [0.0; 4];
    for (slot, v) in out.iter_mut().zip(times) {
        *slot = v.as_f64().ok_or("a time is not a number")?;
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(
    samples: usize,
    published_bin: Option<std::path::PathBuf>,
    url: &str,
) -> Result<(), String> {
    let ours = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cells: Vec<(Kind, Tls, std::path::PathBuf, Vec<[f64; 4]>)> = Vec::new();
    for tls in [Tls::Off, Tls::On] {
        cells.push((Kind::Ours, tls, ours.clone(), Vec::new()));
        if let Some(bin) = &published_bin {
            cells.push((Kind::Published, tls, bin.clone(), Vec::new()));
        }
    }
    for _ in 0..samples {
        for (kind, tls, bin, got) in &mut cells {
            got.push(child_sample(bin, *kind, *tls, url).await?);
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "cold start, {profile} builds, {samples} samples each (a new process each), medians in ms"
    );
    println!(
        "| provider (TLS stack) | TLS | construct, fresh schema | first turn visible | first orchestration completed | construct, up-to-date schema |"
    );
    println!("|---|---|---|---|---|---|");
    for (kind, tls, _, got) in &cells {
        let col = |i: usize| median(got.iter().map(|s| s[i]).collect());
        let stack = match kind {
            Kind::Ours => "duroxide-pg, rustls",
            Kind::Published => "published 0.1.38, native-tls",
        };
        println!(
            "| {stack} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            tls_name(*tls),
            col(0),
            col(1),
            col(2),
            col(3)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match Cli::parse().command {
        Command::Sample {
            provider,
            tls,
            database_url,
        } => match base_url(database_url) {
            Ok(url) => sample(provider, &with_sslmode(&url, tls)).await.map(|t| {
                println!(
                    "{}",
                    serde_json::json!({ "provider": name(provider), "tls": tls_name(tls), "tls_stack": TLS_STACK, "ms": t })
                );
            }),
            Err(e) => Err(e),
        },
        Command::Run {
            samples,
            published_bin,
            database_url,
        } => match base_url(database_url) {
            Ok(url) => run(samples.max(1), published_bin, &url).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
