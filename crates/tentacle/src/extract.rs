//! Unpacking a package (zip, nupkg, tar, tar.gz) into `{home}/Applications/…`, then replacing
//! `#{Variable}`s in the files a step names. An archive is untrusted input: no entry may land
//! outside the folder (absolute paths, `..`, writes through a symlink that leads out), no symlink
//! may point out of it, and only files, folders and symlinks are made. It is bounded, counted as
//! it is written: at most [`MAX_FILES`] entries and [`Limits::bytes`] bytes — [`MAX_RATIO`] times
//! the archive's size, at most [`MAX_BYTES`], and never the disk's last [`RESERVE`] — so a small
//! archive that unpacks to a huge one (a "zip bomb") stops early and leaves nothing. It is unpacked beside
//! its destination and swapped in whole, so a failed unpack leaves the previous one in place.
//! Blocking: run it off the async threads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cuttle_core::plan::{substitute, Value};
use cuttle_core::{glob_match, PackageFormat};

/// What an unpack did.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub(crate) path: PathBuf,
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) substituted: Vec<String>,
    pub(crate) has_deploy_script: bool,
}

/// An archive entry's path made safe: only plain components (a leading `./` is dropped).
fn entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "entry {} would land outside the folder",
                    raw.display()
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("entry {:?} has no name", raw.display()));
    }
    Ok(out)
}

/// `path` with `.` and `..` resolved without touching the disk; `None` if `..` climbs above
/// where it starts.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            _ => return None,
        }
    }
    Some(out.iter().collect())
}

/// Entries one package may unpack to.
pub(crate) const MAX_FILES: u64 = 200_000;
/// Bytes one package may unpack to, as a multiple of its own size.
pub(crate) const MAX_RATIO: u64 = 200;
/// Bytes one package may unpack to, whatever its size.
pub(crate) const MAX_BYTES: u64 = 16 << 30;
/// Disk space an unpack always leaves free.
pub(crate) const RESERVE: u64 = 256 << 20;

/// What one unpack may write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

impl Limits {
    /// For an archive of `size` bytes, with `free` bytes free where it unpacks.
    pub(crate) fn for_archive(size: u64, free: u64) -> Limits {
        Limits {
            files: MAX_FILES,
            bytes: size
                .saturating_mul(MAX_RATIO)
                .clamp(1 << 20, MAX_BYTES)
                .min(free.saturating_sub(RESERVE)),
        }
    }
}

struct Unpacker {
    root: PathBuf,
    limits: Limits,
    /// `root` as the file system resolves it: every write's folder must be under it.
    real_root: PathBuf,
    files: u64,
    bytes: u64,
    /// Files, folders and links made, against [`Limits::files`].
    entries: u64,
    links: Vec<PathBuf>,
}

impl Unpacker {
    /// The folder for `rel`'s file, created and checked to be inside the root (a symlinked
    /// folder from an earlier entry must not lead out).
    fn folder_for(&self, rel: &Path) -> Result<PathBuf, String> {
        let dir = self.root.join(rel.parent().unwrap_or(Path::new("")));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let real = dir
            .canonicalize()
            .map_err(|e| format!("resolve {}: {e}", dir.display()))?;
        if !real.starts_with(&self.real_root) {
            return Err(format!(
                "entry {} would be written through a link outside the folder",
                rel.display()
            ));
        }
        Ok(dir)
    }

    fn file(&mut self, rel: &Path, mode: Option<u32>, data: &mut dyn Read) -> Result<(), String> {
        self.count_entry()?;
        self.folder_for(rel)?;
        let path = self.root.join(rel);
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path).map_err(|e| format!("replace {}: {e}", rel.display()))?;
        }
        let mut f = File::create(&path).map_err(|e| format!("create {}: {e}", rel.display()))?;
        // One byte past what is left tells a file that would go over.
        let left = self.limits.bytes.saturating_sub(self.bytes);
        let n = std::io::copy(&mut data.take(left.saturating_add(1)), &mut f)
            .map_err(|e| format!("unpack {}: {e}", rel.display()))?;
        if n > left {
            return Err(format!(
                "the package unpacks to more than {} bytes, the most this unpack may write ({} \
                 times the package's size, at most {} GiB, leaving {} MiB of the disk free)",
                self.limits.bytes,
                MAX_RATIO,
                MAX_BYTES >> 30,
                RESERVE >> 20
            ));
        }
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            // Owner always reads and writes; never set-id bits.
            let perms = std::fs::Permissions::from_mode((mode & 0o777) | 0o600);
            std::fs::set_permissions(&path, perms)
                .map_err(|e| format!("set the mode of {}: {e}", rel.display()))?;
        }
        self.files += 1;
        self.bytes += n;
        Ok(())
    }

    fn folder(&mut self, rel: &Path) -> Result<(), String> {
        self.count_entry()?;
        self.folder_for(&rel.join("x"))?;
        Ok(())
    }

    fn count_entry(&mut self) -> Result<(), String> {
        self.entries += 1;
        if self.entries > self.limits.files {
            return Err(format!(
                "the package holds more than {} entries, the most one unpack makes",
                self.limits.files
            ));
        }
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &Path) -> Result<(), String> {
        self.count_entry()?;
        let within = rel.parent().unwrap_or(Path::new("")).join(target);
        if target.is_absolute() || lexical(&within).is_none() {
            return Err(format!(
                "symlink {} points outside the folder ({})",
                rel.display(),
                target.display()
            ));
        }
        self.folder_for(rel)?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(target, &path)
            .map_err(|e| format!("create symlink {}: {e}", rel.display()))?;
        self.links.push(path);
        Ok(())
    }

    /// Every symlink made, resolved as the file system will: still inside the folder.
    fn check_links(&self) -> Result<(), String> {
        for link in &self.links {
            let resolved = match link.canonicalize() {
                Ok(p) => Some(p),
                // Dangling: where it would point, from its real folder.
                Err(_) => {
                    let target = std::fs::read_link(link).map_err(|e| e.to_string())?;
                    let dir = link
                        .parent()
                        .and_then(|d| d.canonicalize().ok())
                        .unwrap_or_default();
                    let joined = dir.join(target);
                    let rel = joined
                        .strip_prefix(&self.real_root)
                        .ok()
                        .map(Path::to_owned);
                    rel.and_then(|r| lexical(&r))
                        .map(|r| self.real_root.join(r))
                }
            };
            if !resolved.is_some_and(|p| p.starts_with(&self.real_root)) {
                return Err(format!(
                    "symlink {} leads outside the folder",
                    link.strip_prefix(&self.root).unwrap_or(link).display()
                ));
            }
        }
        Ok(())
    }
}

fn unpack_zip(u: &mut Unpacker, package: &Path) -> Result<(), String> {
    let file = File::open(package).map_err(|e| format!("open the package: {e}"))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let raw = PathBuf::from(entry.name());
        let rel = entry_path(&raw)?;
        if entry.is_dir() {
            u.folder(&rel)?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(|e| format!("read symlink {}: {e}", rel.display()))?;
            u.symlink(&rel, Path::new(&target))?;
        } else {
            let mode = entry.unix_mode();
            u.file(&rel, mode, &mut entry)?;
        }
    }
    Ok(())
}

fn unpack_tar(u: &mut Unpacker, reader: impl Read) -> Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a readable tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("tar entry: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("tar entry name: {e}"))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let rel = match entry_path(&raw) {
            Ok(r) => r,
            // The archive's own top folder, `./`.
            Err(_) if kind.is_dir() && lexical(&raw).is_some_and(|p| p.as_os_str().is_empty()) => {
                continue
            }
            Err(e) => return Err(e),
        };
        if kind.is_dir() {
            u.folder(&rel)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| format!("symlink {}: {e}", rel.display()))?
                .ok_or_else(|| format!("symlink {} has no target", rel.display()))?
                .into_owned();
            u.symlink(&rel, &target)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mode = entry.header().mode().ok();
            u.file(&rel, mode, &mut entry)?;
        } else {
            return Err(format!(
                "entry {} is a {kind:?}: only files, folders and symlinks are unpacked",
                rel.display()
            ));
        }
    }
    Ok(())
}

/// Every regular file under `root`, relative, `/`-separated.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                walk(root, &p, out);
            } else if kind.is_file() {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn substitute_files(
    root: &Path,
    globs: &[String],
    variables: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let values: BTreeMap<String, Value> = variables
        .iter()
        .map(|(k, v)| (k.clone(), Value::plain(v.clone(), false)))
        .collect();
    let mut done = Vec::new();
    for rel in files_under(root) {
        if !globs.iter().any(|g| glob_match(g, &rel)) {
            continue;
        }
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("substitute in {rel}: not UTF-8 text ({e})"))?;
        let replaced =
            substitute(&text, &values).map_err(|e| format!("substitute in {rel}: {e}"))?;
        if replaced != text {
            std::fs::write(&path, replaced).map_err(|e| format!("write {rel}: {e}"))?;
        }
        done.push(rel);
    }
    Ok(done)
}

/// Unpacks `package` into `apps_root/destination`, then substitutes.
pub(crate) fn extract(
    package: &Path,
    format: PackageFormat,
    apps_root: &Path,
    destination: &Path,
    globs: &[String],
    variables: &BTreeMap<String, String>,
) -> Result<Extracted, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dest = apps_root.join(entry_path(destination)?);
    let parent = dest.parent().unwrap_or(apps_root).to_owned();
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".{name}.unpacking-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|e| format!("create {}: {e}", staging.display()))?;
    let real_root = staging
        .canonicalize()
        .map_err(|e| format!("resolve {}: {e}", staging.display()))?;
    let size = std::fs::metadata(package)
        .map_err(|e| format!("read the package: {e}"))?
        .len();
    let mut u = Unpacker {
        root: staging.clone(),
        limits: Limits::for_archive(size, crate::agent::free_disk(&parent)),
        real_root,
        files: 0,
        bytes: 0,
        entries: 0,
        links: Vec::new(),
    };
    let unpacked = (|| {
        if format.is_zip() {
            unpack_zip(&mut u, package)?;
        } else {
            let file = File::open(package).map_err(|e| format!("open the package: {e}"))?;
            let reader = BufReader::with_capacity(1 << 16, file);
            if format.is_gzip() {
                unpack_tar(&mut u, flate2::read::GzDecoder::new(reader))?;
            } else {
                unpack_tar(&mut u, reader)?;
            }
        }
        u.check_links()?;
        substitute_files(&staging, globs, variables)
    })();
    let substituted = match unpacked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let has_deploy_script = staging.join("deploy.sh").is_file();
    // Swap: the previous unpack (a redeploy of this version) goes only once the new one is whole.
    let old = parent.join(format!(".{name}.old-{}-{n}", std::process::id()));
    let had = std::fs::rename(&dest, &old).is_ok();
    if let Err(e) = std::fs::rename(&staging, &dest) {
        if had {
            let _ = std::fs::rename(&old, &dest);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("put {} in place: {e}", dest.display()));
    }
    if had {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(Extracted {
        path: dest,
        files: u.files,
        bytes: u.bytes,
        substituted,
        has_deploy_script,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cuttle-extract-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tar_gz(dir: &Path, entries: &[(&str, tar::EntryType, &[u8], &str)]) -> PathBuf {
        let path = dir.join("p.tar.gz");
        let gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
        let mut b = tar::Builder::new(gz);
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            // Written raw: the builder's own path checks would refuse the hostile names.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn a_tar_gz_is_unpacked_substituted_and_swapped_in() {
        let d = temp("ok");
        let pkg = tar_gz(
            &d,
            &[
                ("./", tar::EntryType::Directory, b"", ""),
                ("deploy.sh", tar::EntryType::Regular, b"echo hi", ""),
                (
                    "config/app.json",
                    tar::EntryType::Regular,
                    b"{\"db\": \"#{Db}\"}",
                    "",
                ),
                ("config/current", tar::EntryType::Symlink, b"", "app.json"),
                ("bin/tool", tar::EntryType::Regular, b"\x00\x01", ""),
            ],
        );
        let apps = d.join("Applications");
        let vars = BTreeMap::from([("Db".to_owned(), "prod-db".to_owned())]);
        let globs = vec!["config/*.json".to_owned()];
        let x = extract(
            &pkg,
            PackageFormat::TarGz,
            &apps,
            Path::new("Prod/App/1.0.0"),
            &globs,
            &vars,
        )
        .unwrap();
        assert_eq!((x.files, x.has_deploy_script), (3, true));
        assert_eq!(x.substituted, ["config/app.json"]);
        let app = apps.join("Prod/App/1.0.0");
        assert_eq!(
            std::fs::read_to_string(app.join("config/app.json")).unwrap(),
            "{\"db\": \"prod-db\"}"
        );
        assert_eq!(
            std::fs::read_to_string(app.join("config/current")).unwrap(),
            "{\"db\": \"prod-db\"}"
        );
        // Again (a redeploy): replaced whole; nothing staged is left beside it.
        extract(
            &pkg,
            PackageFormat::TarGz,
            &apps,
            Path::new("Prod/App/1.0.0"),
            &[],
            &vars,
        )
        .unwrap();
        assert!(std::fs::read_to_string(app.join("config/app.json"))
            .unwrap()
            .contains("#{Db}"));
        let left: Vec<_> = std::fs::read_dir(apps.join("Prod/App"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["1.0.0"]);
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        let d = temp("hostile");
        let apps = d.join("Applications");
        let none = BTreeMap::new();
        for (entries, why) in [
            (
                vec![("../escape", tar::EntryType::Regular, &b"x"[..], "")],
                "outside",
            ),
            (
                vec![("/abs", tar::EntryType::Regular, &b"x"[..], "")],
                "outside",
            ),
            (
                vec![("l", tar::EntryType::Symlink, &b""[..], "/etc")],
                "points outside",
            ),
            (
                vec![("l", tar::EntryType::Symlink, &b""[..], "../../x")],
                "points outside",
            ),
            (
                vec![
                    ("d", tar::EntryType::Symlink, &b""[..], "."),
                    ("e", tar::EntryType::Symlink, &b""[..], "d/.."),
                ],
                "leads outside",
            ),
            (
                vec![("dev", tar::EntryType::Char, &b""[..], "")],
                "only files",
            ),
        ] {
            let pkg = tar_gz(&d, &entries);
            let e = extract(
                &pkg,
                PackageFormat::TarGz,
                &apps,
                Path::new("E/P/1.0.0"),
                &[],
                &none,
            )
            .unwrap_err();
            assert!(e.contains(why), "{entries:?}: {e}");
            assert!(!d.join("escape").exists());
            let left = std::fs::read_dir(apps.join("E/P"))
                .map(|r| r.count())
                .unwrap_or(0);
            assert_eq!(left, 0, "{entries:?}");
        }
    }

    #[test]
    fn a_package_that_unpacks_to_far_more_than_its_size_stops_and_leaves_nothing() {
        let d = temp("bomb");
        let apps = d.join("Applications");
        // 64 MiB of zeros: a few tens of KiB packed, more than 200 times that unpacked.
        let zeros = vec![0u8; 64 << 20];
        let pkg = tar_gz(&d, &[("big.bin", tar::EntryType::Regular, &zeros[..], "")]);
        let packed = std::fs::metadata(&pkg).unwrap().len();
        assert!(packed < (64 << 20) / MAX_RATIO, "{packed}");
        let e = extract(
            &pkg,
            PackageFormat::TarGz,
            &apps,
            Path::new("E/P/1.0.0"),
            &[],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.contains("unpacks to more than"), "{e}");
        let left = std::fs::read_dir(apps.join("E/P"))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "nothing is left of it");
        // Limits: a multiple of the size, at most MAX_BYTES, never the disk's reserve.
        assert_eq!(Limits::for_archive(1 << 20, u64::MAX).bytes, 200 << 20);
        assert_eq!(Limits::for_archive(1 << 40, u64::MAX).bytes, MAX_BYTES);
        assert_eq!(Limits::for_archive(1 << 20, RESERVE + 5).bytes, 5);
    }

    #[test]
    fn too_many_entries_are_refused() {
        let d = temp("entries");
        let mut u = Unpacker {
            root: d.clone(),
            real_root: d.canonicalize().unwrap(),
            limits: Limits {
                files: 3,
                bytes: 1 << 20,
            },
            files: 0,
            bytes: 0,
            entries: 0,
            links: Vec::new(),
        };
        for i in 0..3 {
            u.file(Path::new(&format!("f{i}")), None, &mut &b"x"[..])
                .unwrap();
        }
        let e = u.folder(Path::new("more")).unwrap_err();
        assert!(e.contains("more than 3 entries"), "{e}");
    }

    #[test]
    fn a_zip_is_unpacked_with_its_modes_and_slips_are_refused() {
        let d = temp("zip");
        let path = d.join("p.zip");
        let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        w.add_directory("www/", opts).unwrap();
        w.start_file("www/index.html", opts).unwrap();
        w.write_all(b"<h1>#{Title}</h1>").unwrap();
        w.start_file("deploy.sh", opts).unwrap();
        w.write_all(b"true").unwrap();
        w.finish().unwrap();
        let apps = d.join("Applications");
        let vars = BTreeMap::from([("Title".to_owned(), "Shop".to_owned())]);
        let x = extract(
            &path,
            PackageFormat::Zip,
            &apps,
            Path::new("Dev/Site/2.0.0"),
            &["**/*.html".to_owned()],
            &vars,
        )
        .unwrap();
        assert_eq!((x.files, x.substituted.len()), (2, 1));
        let dir = apps.join("Dev/Site/2.0.0");
        assert_eq!(
            std::fs::read_to_string(dir.join("www/index.html")).unwrap(),
            "<h1>Shop</h1>"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.join("deploy.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        let slip = d.join("slip.zip");
        let mut w = zip::ZipWriter::new(File::create(&slip).unwrap());
        w.start_file("../../evil.sh", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        let e = extract(
            &slip,
            PackageFormat::Zip,
            &apps,
            Path::new("Dev/Site/3.0.0"),
            &[],
            &vars,
        )
        .unwrap_err();
        assert!(e.contains("outside"), "{e}");
        assert!(!d.join("evil.sh").exists() && !apps.join("evil.sh").exists());
    }
}
