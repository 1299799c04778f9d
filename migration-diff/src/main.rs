//! `migration-diff`: writes `migrations/NNNN_diff.md`, what migration N
//! changes in the schema (tables, indexes, functions), for reviewers
//! (`scripts/generate_migration_diff N`); with `--schema-files DIR`, writes
//! the current schema as one file per function instead
//! (`scripts/generate_schema`, the `schema/` folder).
//!
//! It applies migrations 1..N-1, then 1..N, each to a temporary schema inside
//! a transaction that is rolled back, and compares the two catalogs. Uses
//! `DATABASE_URL`, or the throwaway local cluster the tests use when unset.

mod catalog;
mod line_diff;
mod render;
mod schema_files;

use std::path::{Path, PathBuf};

use clap::Parser;
use sqlx::Connection;

/// Write the schema diff of one migration as markdown, or the current schema as files.
#[derive(Debug, Parser)]
#[command(name = "migration-diff")]
struct Args {
    /// The migration's version number (the NNNN of its file name).
    #[arg(required_unless_present = "schema_files")]
    version: Option<u32>,
    /// Instead of a diff: write the schema after every migration into this
    /// folder (`functions/<name>.sql` per function, `tables.sql`).
    #[arg(long, conflicts_with_all = ["version", "output"])]
    schema_files: Option<PathBuf>,
    /// Folder of the numbered migration files.
    #[arg(long, env = "DUROXIDE_PG_MIGRATIONS_DIR", default_value = "migrations")]
    migrations_dir: PathBuf,
    /// Where to write the document (`-` for stdout); default `<dir>/NNNN_diff.md`.
    #[arg(long)]
    output: Option<PathBuf>,
    /// PostgreSQL to build the temporary schemas in (default: a throwaway local cluster).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// The numbered migration files of `dir`: (version, file name, SQL), in order.
fn migration_files(dir: &Path) -> Result<Vec<(u32, String, String)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let name = entry
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let Some(stem) = name.strip_suffix(".sql") else {
            continue;
        };
        let Some(version) = stem.get(..4).and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        let sql = std::fs::read_to_string(dir.join(&name))
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        files.push((version, name, sql));
    }
    files.sort();
    for (i, (v, name, _)) in files.iter().enumerate() {
        if *v as usize != i + 1 {
            return Err(format!(
                "{name}: expected migration {:04} here (versions must be 1, 2, 3, ...)",
                i + 1
            ));
        }
    }
    Ok(files)
}

async fn run(args: Args) -> Result<PathBuf, String> {
    let files = migration_files(&args.migrations_dir)?;
    let version = match (&args.schema_files, args.version) {
        (Some(_), _) => files.len() as u32,
        (None, Some(0)) => return Err("migration versions start at 1".into()),
        (None, Some(v)) => v,
        (None, None) => return Err("give a migration version or --schema-files DIR".into()),
    };
    let Some((_, file, _)) = files.iter().find(|(v, _, _)| *v == version) else {
        return Err(format!(
            "no migration {:04} in {} (it has {})",
            version,
            args.migrations_dir.display(),
            files.len()
        ));
    };
    let url = match args.database_url {
        Some(u) => u,
        None => duroxide_pg_testkit::local_cluster::database_url().map_err(|e| e.to_string())?,
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.map_err(|e| {
        format!(
            "cannot connect: {}",
            duroxide_pg::scrub(&e.to_string(), &url)
        )
    })?;
    let scripts = |upto: u32| -> Vec<(String, String)> {
        files
            .iter()
            .filter(|(v, _, _)| *v <= upto)
            .map(|(_, n, s)| (n.clone(), s.clone()))
            .collect()
    };
    let schema = format!("dxdiff_{}", std::process::id());
    if let Some(dir) = &args.schema_files {
        let current = catalog::build(&mut conn, &schema, &scripts(version)).await?;
        schema_files::write(dir, &schema_files::render(&current, file))?;
        return Ok(dir.clone());
    }
    let before = catalog::build(&mut conn, &schema, &scripts(version - 1)).await?;
    let after = catalog::build(&mut conn, &schema, &scripts(version)).await?;
    let doc = render::document(&render::Subject { version, file }, &before, &after);
    let output = args
        .output
        .unwrap_or_else(|| args.migrations_dir.join(format!("{version:04}_diff.md")));
    if output.as_os_str() == "-" {
        print!("{doc}");
    } else {
        std::fs::write(&output, doc)
            .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    }
    Ok(output)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(path) => {
            if path.as_os_str() != "-" {
                eprintln!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
