//! Opening a file a script names, only from inside the script's folder: each component is
//! opened relative to the one before without following symbolic links, so neither a link nor a
//! `..` leads out, whatever the script does meanwhile; the file must be a regular file with one
//! name (a hard link to a file elsewhere, such as the tentacle's key, is refused).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens `rel` (a relative path, `./` allowed) inside `dir` for reading.
pub(crate) fn open_beneath(dir: &Path, rel: &str) -> io::Result<File> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_owned());
    let rel = rel.strip_prefix("./").unwrap_or(rel);
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(refused("no file named"));
    };
    if rel.starts_with('/') || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(refused(
            "the path must be relative to the script's working directory, without \"..\"",
        ));
    }
    let mut at = open_at(
        None,
        dir.as_os_str().as_bytes(),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    for d in dirs {
        at = open_at(
            Some(&at),
            d.as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(|e| link_out(e, d))?;
    }
    // Non-blocking: a FIFO must not hang the tentacle (it is refused below).
    let fd = open_at(
        Some(&at),
        last.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )
    .map_err(|e| link_out(e, last))?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refused("it is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refused(
            "it has more than one name (a hard link to a file elsewhere)",
        ));
    }
    Ok(file)
}

fn link_out(e: io::Error, name: &str) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{name:?} is a symbolic link (links are not followed)"),
        ),
        _ => e,
    }
}

fn open_at(at: Option<&OwnedFd>, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dirfd = at.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    // SAFETY: a valid C string and directory descriptor; the result is owned below.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn only_regular_files_inside_the_folder_are_opened() {
        let root = std::env::temp_dir().join(format!("cuttle-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("work");
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("out/report.txt"), "ok").unwrap();
        std::fs::write(root.join("key.pem"), "PRIVATE").unwrap();
        let mut s = String::new();
        open_beneath(&dir, "./out/report.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ok");
        std::os::unix::fs::symlink(root.join("key.pem"), dir.join("key-link")).unwrap();
        std::os::unix::fs::symlink(&root, dir.join("up")).unwrap();
        std::fs::hard_link(root.join("key.pem"), dir.join("key-hard")).unwrap();
        let fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for bad in [
            "key-link",
            "up/key.pem",
            "key-hard",
            "fifo",
            "../key.pem",
            "out/../../key.pem",
            "/etc/passwd",
            root.join("key.pem").to_str().unwrap(),
            "out",
            "",
        ] {
            let e = open_beneath(&dir, bad).expect_err(bad);
            assert_ne!(e.kind(), io::ErrorKind::NotFound, "{bad}: {e}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
