//! What a node does to its own process before anything else runs: it becomes non-dumpable (no
//! other process of its user can read its memory or `/proc/PID/environ`, or attach a debugger
//! to it; no core dumps), and the secrets it was given in its environment are read, then wiped
//! from it — from the process's environment and from the memory `/proc/PID/environ` shows.

use std::ffi::CStr;

/// Variables that carry secrets; wiped once the settings have been read.
pub(crate) const SECRET_VARIABLES: &[&str] = &[
    "CUTTLE_MASTER_KEY",
    "CUTTLE_DATABASE_URL",
    "CUTTLE_ADMIN_API_KEY",
    "PGPASSWORD",
    // An OpenTelemetry collector's credentials.
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

extern "C" {
    static mut environ: *mut *mut libc::c_char;
}

/// Makes this process non-dumpable and wipes [`SECRET_VARIABLES`] from it.
///
/// Must run while the process has one thread (before the async runtime starts): it changes
/// the environment in place.
pub(crate) fn harden_process() {
    // SAFETY: prctl with these arguments has no memory-safety preconditions.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!(
            "cuttle-server: warning: could not make the process non-dumpable: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: single-threaded (see above); `environ` is a NULL-terminated array of pointers to
    // NUL-terminated strings, which we only overwrite within their own length.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = *p;
            let text = CStr::from_ptr(entry).to_bytes();
            if let Some(eq) = text.iter().position(|b| *b == b'=') {
                let name = &text[..eq];
                if SECRET_VARIABLES.iter().any(|s| s.as_bytes() == name) {
                    let value_len = text.len() - eq - 1;
                    std::ptr::write_bytes(entry.add(eq + 1), 0, value_len);
                }
            }
            p = p.add(1);
        }
        for name in SECRET_VARIABLES {
            if let Ok(c) = std::ffi::CString::new(*name) {
                libc::unsetenv(c.as_ptr());
            }
        }
    }
}
