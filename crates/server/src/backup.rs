//! `cuttle-server backup --to DIR` and `restore --from DIR`: the cluster's database and shared
//! store, and the check value of the master key they are sealed with.
//!
//! A backup is written into `DIR.partial` and renamed to `DIR` once every file in it is synced:
//! a directory named `DIR` is always a whole backup. In it:
//! - `manifest.json` — the format, Cuttle's version, the schema version, the database's kind
//!   and file, the master key's check value, and the shared store's totals;
//! - the database: `database.sqlite` (SQLite's own consistent copy, `VACUUM INTO`),
//!   `database.pgdump` (`pg_dump --format=custom`), or for SQL Server `database.sql-server.txt`
//!   with the `BACKUP DATABASE` command to run on the server (Cuttle cannot copy a database
//!   file it has no access to);
//! - `shared/` — every file of the shared store but those still being written, and
//!   `shared.manifest` (one JSON line per file: path, size, SHA-256), checked on restore.
//!
//! The database is copied first: whatever it names is in the store by then, and the store only
//! gains files (retention aside) while the copy of it runs.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use cuttle_storage::{database_kind, DatabaseKind, Store, ToolConnection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::startup;

const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const SHARED: &str = "shared";
const SHARED_MANIFEST: &str = "shared.manifest";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    cuttle_version: String,
    schema_version: u32,
    /// `sqlite`, `postgres` or `sqlserver`.
    database: String,
    /// The database's file in the backup; `None` when the backup holds only how to take it.
    database_file: Option<String>,
    /// Its SHA-256, checked before it is restored.
    database_sha256: Option<String>,
    master_key_check: String,
    shared_files: u64,
    shared_bytes: u64,
}

/// One file of the shared store, as `shared.manifest` lists it.
#[derive(Debug, Serialize, Deserialize)]
struct SharedFile {
    path: String,
    size: u64,
    sha256: String,
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
}

/// Reads `from` (a regular file, never through a link: one swapped in after the listing would
/// hand over what it points at), streaming, into `to` when given (created new, synced); its
/// size and SHA-256.
fn read_hashed(from: &Path, to: Option<&Path>) -> Result<(u64, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .with_context(|| format!("read {}", from.display()))?;
    if !src.metadata()?.is_file() {
        bail!("{} is not a regular file", from.display());
    }
    let mut dst = match to {
        None => None,
        Some(to) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)
                .with_context(|| format!("create {}", to.display()))?,
        ),
    };
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("read {}", from.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        if let (Some(d), Some(to)) = (&mut dst, to) {
            d.write_all(&buf[..n])
                .with_context(|| format!("write {}", to.display()))?;
        }
        size += n as u64;
    }
    if let (Some(d), Some(to)) = (dst, to) {
        d.sync_all()
            .with_context(|| format!("sync {}", to.display()))?;
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// Copies `from` to `to` (created new); its size and SHA-256.
fn copy_hashed(from: &Path, to: &Path) -> Result<(u64, String)> {
    read_hashed(from, Some(to))
}

/// Files still being written live in each top folder's `InProgress/` (`Packages/InProgress/…`):
/// not part of any state to restore. Only there: a package or an artifact may be *named*
/// `InProgress` or `x.partial` and is kept like any other.
fn in_progress(rel: &Path) -> bool {
    let mut parts = rel.components();
    parts.next();
    parts.next().is_some_and(|c| c.as_os_str() == "InProgress")
}

/// A line on stderr every few seconds while files are copied: a large store takes a while.
struct Progress {
    verb: &'static str,
    total: usize,
    last: std::time::Instant,
}

impl Progress {
    fn new(verb: &'static str, total: usize) -> Progress {
        Progress {
            verb,
            total,
            last: std::time::Instant::now(),
        }
    }

    #[allow(clippy::print_stderr)] // progress for whoever runs the command
    fn tick(&mut self, files: u64, bytes: u64) {
        if self.last.elapsed() >= std::time::Duration::from_secs(5) {
            self.last = std::time::Instant::now();
            eprintln!(
                "{} {files} of {} shared file(s), {} MiB",
                self.verb,
                self.total,
                bytes >> 20
            );
        }
    }
}

/// Every regular file under `root`, as paths relative to it, in a stable order.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && !in_progress(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs one of PostgreSQL's tools on `db`, its password in the environment.
fn pg_tool(tool: &str, db: &ToolConnection, args: &[&std::ffi::OsStr]) -> Result<()> {
    let mut cmd = Command::new(tool);
    cmd.args(args).env_remove("PGPASSWORD");
    if let Some(p) = &db.password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().map_err(|e| {
        anyhow::anyhow!(
            "run {tool}: {e} (install PostgreSQL's client tools, the server's version or newer)"
        )
    })?;
    if !out.status.success() {
        bail!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `cuttle-server backup --to DIR`.
#[allow(clippy::print_stdout)] // what was written is the command's output
pub(crate) async fn backup(cfg: &Config, to: &Path) -> Result<()> {
    if to.exists() {
        bail!(
            "{} exists: a backup goes into a new directory",
            to.display()
        );
    }
    let name = to
        .file_name()
        .with_context(|| format!("{} names no directory to create", to.display()))?;
    let mut partial_name = name.to_owned();
    partial_name.push(".partial");
    let partial = to.with_file_name(partial_name);
    if partial.exists() {
        bail!(
            "{} exists: an earlier backup was interrupted; remove it first",
            partial.display()
        );
    }
    let store = startup::connect(cfg).await?;
    let schema = store.schema_version().await?;
    if schema != cuttle_storage::SCHEMA_VERSION {
        bail!(
            "the database is at schema {schema}, this binary at {}: back it up with the \
             binary that serves it",
            cuttle_storage::SCHEMA_VERSION
        );
    }
    // The key given must be the cluster's: a backup is only worth its key.
    startup::master_key(cfg, &store).await?;
    let check = store
        .get_setting(cuttle_storage::SETTING_MASTER_KEY_CHECK)
        .await?
        .context("the database holds no master key check")?;
    let shared = startup::shared_store(cfg, &store).await?;
    std::fs::create_dir_all(&partial).with_context(|| format!("create {}", partial.display()))?;

    let (database, database_file) = match database_kind(&cfg.database_url)? {
        DatabaseKind::Sqlite(_) => {
            store
                .export_sqlite(&partial.join("database.sqlite"))
                .await?;
            ("sqlite", Some("database.sqlite"))
        }
        DatabaseKind::Postgres(db) => {
            let file = partial.join("database.pgdump");
            pg_tool(
                "pg_dump",
                &db,
                &[
                    "--format=custom".as_ref(),
                    "--no-owner".as_ref(),
                    "--file".as_ref(),
                    file.as_os_str(),
                    "--dbname".as_ref(),
                    db.conninfo.as_ref(),
                ],
            )?;
            std::fs::File::open(&file)?.sync_all()?;
            ("postgres", Some("database.pgdump"))
        }
        DatabaseKind::SqlServer { database } => {
            let text = format!(
                "Cuttle cannot copy a SQL Server database's files: take the database's backup \
                 with SQL Server's own command, on the server, while this backup's shared store \
                 is copied (the same minute is close enough: the store only gains files):\n\n\
                 BACKUP DATABASE [{database}] TO DISK = N'/var/opt/mssql/backup/{database}.bak' \
                 WITH COPY_ONLY, CHECKSUM, INIT;\n\n\
                 and restore it with\n\n\
                 RESTORE DATABASE [{database}] FROM DISK = N'/var/opt/mssql/backup/{database}.bak' \
                 WITH CHECKSUM;\n\n\
                 (Azure SQL: export a BACPAC, or use point-in-time restore.)\n"
            );
            std::fs::write(partial.join("database.sql-server.txt"), text)?;
            println!(
                "SQL Server: back the database up with BACKUP DATABASE (the command is in \
                 {}/database.sql-server.txt)",
                to.display()
            );
            ("sqlserver", None)
        }
    };

    let database_sha256 = match database_file {
        Some(f) => Some(read_hashed(&partial.join(f), None)?.1),
        None => None,
    };
    let root = shared.root().to_owned();
    let files = files_under(&root)?;
    let target = partial.join(SHARED);
    let mut list = std::io::BufWriter::new(
        std::fs::File::create(partial.join(SHARED_MANIFEST)).context("create shared.manifest")?,
    );
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut progress = Progress::new("copied", files.len());
    for rel in &files {
        let dst = target.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (size, sha256) = match copy_hashed(&root.join(rel), &dst) {
            Ok(x) => x,
            // Removed by retention since it was listed: not part of the backup.
            Err(e) if !root.join(rel).exists() => {
                tracing::debug!(error = %e, "a shared file went while it was copied");
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = serde_json::to_string(&SharedFile {
            path: rel.to_string_lossy().into_owned(),
            size,
            sha256,
        })?;
        writeln!(list, "{line}")?;
        count += 1;
        bytes += size;
        progress.tick(count, bytes);
    }
    list.into_inner()
        .map_err(|e| anyhow::anyhow!("write shared.manifest: {e}"))?
        .sync_all()?;
    let manifest = Manifest {
        format: FORMAT,
        cuttle_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: schema,
        database: database.into(),
        database_file: database_file.map(Into::into),
        database_sha256,
        master_key_check: check,
        shared_files: count,
        shared_bytes: bytes,
    };
    let mut m = std::fs::File::create(partial.join(MANIFEST))?;
    m.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    m.sync_all()?;
    sync_dir(&partial)?;
    std::fs::rename(&partial, to)
        .with_context(|| format!("rename {} to {}", partial.display(), to.display()))?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    println!(
        "backed up the {database} database (schema {schema}) and {count} shared file(s), \
         {bytes} bytes, to {}",
        to.display()
    );
    Ok(())
}

/// `shared.manifest`, every path checked to stay inside the store.
fn read_shared_manifest(from: &Path) -> Result<Vec<SharedFile>> {
    let list = std::io::BufReader::new(
        std::fs::File::open(from.join(SHARED_MANIFEST)).context("open shared.manifest")?,
    );
    let mut out = Vec::new();
    for line in list.lines() {
        let f: SharedFile = serde_json::from_str(&line?).context("a line of shared.manifest")?;
        let rel = Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!("shared.manifest names {:?}, outside the store", f.path);
        }
        out.push(f);
    }
    Ok(out)
}

/// `cuttle-server restore --from DIR`: into an empty database and an empty shared store.
#[allow(clippy::print_stdout)]
pub(crate) async fn restore(cfg: &Config, from: &Path) -> Result<()> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(from.join(MANIFEST))
            .with_context(|| format!("read {}", from.join(MANIFEST).display()))?,
    )
    .context("manifest.json")?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a backup of format {}; this binary reads format {FORMAT}",
            from.display(),
            manifest.format
        );
    }
    if manifest.schema_version > cuttle_storage::SCHEMA_VERSION {
        bail!(
            "the backup is of schema {}, newer than this binary's {}: restore it with Cuttle {} \
             or newer",
            manifest.schema_version,
            cuttle_storage::SCHEMA_VERSION,
            manifest.cuttle_version
        );
    }
    // Before anything is written: the master key given must open what the backup sealed.
    let key = startup::configured_master_key(cfg)?;
    if key.verify(&manifest.master_key_check).is_err() {
        bail!(
            "the master key given (CUTTLE_MASTER_KEY or the data directory's master.key) is not \
             the one this backup's secrets are sealed with"
        );
    }
    let shared_root = cfg.shared_path.clone();
    if shared_root.exists() && std::fs::read_dir(&shared_root)?.next().is_some() {
        bail!(
            "the shared store {} is not empty: restore into an empty one (CUTTLE_SHARED_PATH)",
            shared_root.display()
        );
    }

    // The whole backup checked before anything is written: a damaged one restores nothing.
    if let (Some(file), Some(want)) = (&manifest.database_file, &manifest.database_sha256) {
        let (_, got) = read_hashed(&from.join(file), None)?;
        if &got != want {
            bail!("{file} in the backup is damaged (SHA-256 {got}, the manifest says {want})");
        }
    }
    let listed = read_shared_manifest(from)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for f in &listed {
        let (size, got) = read_hashed(&from.join(SHARED).join(&f.path), None)?;
        if size != f.size || got != f.sha256 {
            bail!(
                "{} in the backup is damaged ({size} bytes, SHA-256 {got}; the manifest says {} \
                 bytes, {})",
                f.path,
                f.size,
                f.sha256
            );
        }
        count += 1;
        bytes += f.size;
    }
    if count != manifest.shared_files || bytes != manifest.shared_bytes {
        bail!(
            "the backup's shared store lists {count} file(s), {bytes} bytes; its manifest says \
             {} and {}",
            manifest.shared_files,
            manifest.shared_bytes
        );
    }

    match (
        database_kind(&cfg.database_url)?,
        manifest.database.as_str(),
    ) {
        (DatabaseKind::Sqlite(path), "sqlite") => {
            if path.exists() {
                bail!(
                    "{} exists: restore into a new database file",
                    path.display()
                );
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Whole or not at all: a copy cut short never looks like a database.
            let mut partial_name = path.file_name().unwrap_or_default().to_owned();
            partial_name.push(".partial");
            let partial = path.with_file_name(partial_name);
            let _ = std::fs::remove_file(&partial);
            copy_hashed(&from.join("database.sqlite"), &partial)?;
            std::fs::rename(&partial, &path)
                .with_context(|| format!("rename {} into place", partial.display()))?;
        }
        (DatabaseKind::Postgres(db), "postgres") => {
            let store = startup::connect(cfg).await?;
            if store.schema_version().await? != 0 {
                bail!("the database is not empty: restore into a new, empty database");
            }
            drop(store);
            let file = from.join("database.pgdump");
            pg_tool(
                "pg_restore",
                &db,
                &[
                    "--no-owner".as_ref(),
                    "--exit-on-error".as_ref(),
                    "--single-transaction".as_ref(),
                    "--dbname".as_ref(),
                    db.conninfo.as_ref(),
                    file.as_os_str(),
                ],
            )?;
        }
        (DatabaseKind::SqlServer { .. }, "sqlserver") => {
            println!(
                "SQL Server: restore the database with RESTORE DATABASE first ({}); \
                 restoring the shared store",
                from.join("database.sql-server.txt").display()
            );
        }
        (_, theirs) => {
            bail!("the backup holds a {theirs} database; CUTTLE_DATABASE_URL names another kind")
        }
    }

    // The shared store, every file checked again as it is copied.
    std::fs::create_dir_all(&shared_root)
        .with_context(|| format!("create {}", shared_root.display()))?;
    let mut progress = Progress::new("restored", listed.len());
    let mut done = (0u64, 0u64);
    for f in &listed {
        done = (done.0 + 1, done.1 + f.size);
        progress.tick(done.0, done.1);
        let rel = Path::new(&f.path);
        let dst = shared_root.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (size, sha256) = copy_hashed(&from.join(SHARED).join(rel), &dst)?;
        if size != f.size || sha256 != f.sha256 {
            bail!(
                "{} changed while it was restored ({size} bytes, SHA-256 {sha256})",
                f.path
            );
        }
    }
    sync_dir(&shared_root)?;

    // The restored database names the store where the backup's cluster had it: now it is here.
    let store: Store = startup::connect(cfg).await?;
    if store.schema_version().await? != 0 {
        startup::prepare_schema(&store).await?;
        startup::set_shared_path(&store, &shared_root).await?;
    }
    println!(
        "restored the {} database (schema {}) and {count} shared file(s), {bytes} bytes; the \
         shared store is {}",
        manifest.database,
        manifest.schema_version,
        shared_root.display()
    );
    Ok(())
}
