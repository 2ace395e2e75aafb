//! The package repository's files: `Packages/{space}/{package id}/{id}.{version}_{hash}.{ext}`.
//! The hash in the name (the first 16 hex digits of the content's SHA-256) means two uploads of
//! one version never write the same path unless their bytes are equal, so a file in place is
//! always whole and always what its database row says. An upload is received under
//! `Packages/InProgress/{node}/`, hashed while it arrives, fsynced, and only then renamed into
//! place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cuttle_core::{PackageFileName, PackageFormat};
use sha2::{Digest, Sha256};

use super::SharedStore;
use crate::{Error, Result};

const PACKAGES: &str = "Packages";
/// Hex digits of the SHA-256 in a package's file name.
const NAME_HASH_LEN: usize = 16;

/// A file being received: written through a buffer, hashed on the way, removed unless
/// [`IncomingFile::finish`] is reached. Blocking: use it off the async threads.
pub struct IncomingFile {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    size: u64,
}

impl IncomingFile {
    /// Creates `path` (which must not exist), owner-only.
    pub fn create(path: PathBuf) -> Result<IncomingFile> {
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let file = open
            .open(&path)
            .map_err(|e| Error::io("create upload file", &path, e))?;
        Ok(IncomingFile {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        match &mut self.file {
            Some(f) => f
                .write_all(bytes)
                .map_err(|e| Error::io("write upload file", &self.path, e)),
            None => Ok(()),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and fsyncs the file: its size, its lower-case hex SHA-256, and its path (now the
    /// caller's to place or remove).
    pub fn finish(mut self) -> Result<(u64, String, PathBuf)> {
        let file = self.file.take().map(std::io::BufWriter::into_inner);
        match file {
            Some(Ok(f)) => f
                .sync_all()
                .map_err(|e| Error::io("sync upload file", &self.path, e))?,
            Some(Err(e)) => {
                let e = e.into_error();
                let _ = std::fs::remove_file(&self.path);
                return Err(Error::io("write upload file", &self.path, e));
            }
            None => {}
        }
        let sha = hex(&std::mem::take(&mut self.hasher).finalize());
        Ok((self.size, sha, std::mem::take(&mut self.path)))
    }
}

impl Drop for IncomingFile {
    /// Not finished: the upload was cut short, refused or failed; nothing of it stays.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A package file found in the repository's folders (by a re-index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// Relative to `Packages/`.
    pub file: String,
    pub space: String,
    pub name: PackageFileName,
    /// The hash digits in the file name.
    pub name_hash: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl SharedStore {
    /// Where an upload to `node` is received before it is complete.
    pub fn package_temp(&self, node: &str) -> Result<PathBuf> {
        self.temp_in(PACKAGES, node)
    }

    /// A package's file, relative to `Packages/`.
    pub fn package_file_name(
        space: &str,
        package_id: &str,
        version: &str,
        sha256: &str,
        format: PackageFormat,
    ) -> String {
        let hash = &sha256[..sha256.len().min(NAME_HASH_LEN)];
        format!(
            "{space}/{package_id}/{package_id}.{version}_{hash}.{}",
            format.extension()
        )
    }

    /// The absolute path of a package file named relative to `Packages/`.
    pub fn package_path(&self, file: &str) -> PathBuf {
        self.root.join(PACKAGES).join(file)
    }

    /// Renames a complete, synced upload into place (replacing a file with the same name, which
    /// holds the same bytes) and syncs the folder, so the name survives a crash.
    pub fn place_package(&self, temp: &Path, file: &str) -> Result<()> {
        let dest = self.package_path(file);
        let dir = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create folder", dir, e))?;
        std::fs::rename(temp, &dest).map_err(|e| Error::io("put package in place", &dest, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Moves a package file aside under this node's in-progress folder (so a delete can still be
    /// undone if its database row cannot be removed); `None` when the file is not there.
    pub fn set_package_aside(&self, node: &str, file: &str) -> Result<Option<PathBuf>> {
        let from = self.package_path(file);
        let aside = self.package_temp(node)?;
        match std::fs::rename(&from, &aside) {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("move package aside", &from, e)),
        }
    }

    /// Removes a package file; false when it was not there.
    pub fn remove_package_file(&self, file: &str) -> Result<bool> {
        let path = self.package_path(file);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove package", &path, e)),
        }
    }

    /// Every package file in the repository (in-progress uploads excluded), and the paths of
    /// files in its folders that are not named as packages are (left alone, reported).
    pub fn package_files(&self) -> Result<(Vec<PackageFile>, Vec<PathBuf>)> {
        let root = self.root.join(PACKAGES);
        let (mut found, mut strays) = (Vec::new(), Vec::new());
        for space in read_dir(&root)? {
            let space_name = file_name(&space);
            if space_name == "InProgress" || !space.is_dir() {
                if !space.is_dir() {
                    strays.push(space);
                }
                continue;
            }
            for package in read_dir(&space)? {
                if !package.is_dir() {
                    strays.push(package);
                    continue;
                }
                for path in read_dir(&package)? {
                    match package_file(&space_name, &file_name(&package), &path) {
                        Some(f) => found.push(f),
                        None => strays.push(path),
                    }
                }
            }
        }
        Ok((found, strays))
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list folder", dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| Error::io("list folder", dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads `{id}.{version}_{hash}.{ext}` in the folder of package `id`.
fn package_file(space: &str, folder: &str, path: &Path) -> Option<PackageFile> {
    let name = file_name(path);
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let format = PackageFormat::ALL.into_iter().find(|f| {
        name.to_ascii_lowercase()
            .ends_with(&format!(".{}", f.extension()))
    })?;
    let stem = &name[..name.len() - format.extension().len() - 1];
    let (plain, hash) = stem.rsplit_once('_')?;
    if hash.len() != NAME_HASH_LEN || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let version = plain.strip_prefix(folder)?.strip_prefix('.')?;
    let parsed = PackageFileName::parse(&format!("{folder}.{version}.{}", format.extension()))
        .ok()
        .filter(|p| p.package_id == folder && p.version.to_string() == version)?;
    Some(PackageFile {
        file: format!("{space}/{folder}/{name}"),
        space: space.to_owned(),
        name: parsed,
        name_hash: hash.to_owned(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_dir;
    use super::*;

    #[test]
    fn an_upload_is_hashed_synced_and_placed_or_leaves_nothing() {
        let dir = temp_dir("packages");
        let store = SharedStore::open(&dir).unwrap();
        let temp = store.package_temp("node-a").unwrap();
        let mut f = IncomingFile::create(temp.clone()).unwrap();
        f.write(b"hello ").unwrap();
        f.write(b"world").unwrap();
        let (size, sha, path) = f.finish().unwrap();
        assert_eq!(size, 11);
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let name = SharedStore::package_file_name(
            "Spaces-1",
            "Acme.Web",
            "1.4.2-beta.1+b.7",
            &sha,
            PackageFormat::TarGz,
        );
        assert_eq!(
            name,
            "Spaces-1/Acme.Web/Acme.Web.1.4.2-beta.1+b.7_b94d27b9934d3e08.tar.gz"
        );
        store.place_package(&path, &name).unwrap();
        assert_eq!(
            std::fs::read(store.package_path(&name)).unwrap(),
            b"hello world"
        );

        // One cut short: nothing stays.
        let temp2 = store.package_temp("node-a").unwrap();
        let mut g = IncomingFile::create(temp2.clone()).unwrap();
        g.write(b"half").unwrap();
        assert!(temp2.exists());
        drop(g);
        assert!(!temp2.exists());

        // What a re-index sees: the package, and a stray file left alone.
        std::fs::write(dir.join("Packages/Spaces-1/Acme.Web/notes.txt"), "x").unwrap();
        let _left = store
            .package_temp("node-b")
            .map(|p| std::fs::write(p, "partial"));
        let (found, strays) = store.package_files().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].file, name);
        assert_eq!(found[0].name.version.to_string(), "1.4.2-beta.1+b.7");
        assert_eq!(
            (found[0].name_hash.as_str(), found[0].size),
            ("b94d27b9934d3e08", 11)
        );
        assert_eq!(strays.len(), 1);
        assert_eq!(store.clear_in_progress("node-b").unwrap(), 1);

        let aside = store.set_package_aside("node-a", &name).unwrap().unwrap();
        assert!(!store.package_path(&name).exists() && aside.exists());
        assert_eq!(store.set_package_aside("node-a", &name).unwrap(), None);
        assert_eq!(store.clear_in_progress("node-a").unwrap(), 1);
    }
}
