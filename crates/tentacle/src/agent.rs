//! The `Tentacle` service: what the cluster can ask of this machine.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cuttle_proto::lines::OutputLines;
use cuttle_proto::v1::tentacle_server::{Tentacle, TentacleServer};
use cuttle_proto::v1::{
    file_chunk, script_event, CapabilitiesReply, CapabilitiesRequest, ExtractPackageReply,
    ExtractPackageRequest, FileChunk, OutputLine, PullFileRequest, PushFileReply, RunScriptRequest,
    ScriptEvent,
};
use cuttle_telemetry::trace::continue_from_metadata;
use cuttle_tls::{Thumbprint, Trusted};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::home::Home;

/// How long to wait for output pipes to close after the script is gone.
/// How long a cancelled script's reaper has to end what it started before it is killed.
const REAPER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

const PIPE_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Agent {
    /// Where scripts without a working directory get a fresh one.
    pub(crate) work_root: PathBuf,
    /// Where pushed files go (their paths are relative to it).
    pub(crate) files_root: PathBuf,
    /// The cluster certificates this tentacle trusts, shared with its TLS configurations: a
    /// change applies to the next connection.
    pub(crate) cluster: Arc<Trusted>,
    /// The home, where the trusted certificates are kept across restarts.
    pub(crate) home: PathBuf,
}

impl Agent {
    /// The service for one connection with a node presenting the `peer` certificate.
    pub(crate) fn server(self, peer: Option<Thumbprint>) -> TentacleServer<Connection> {
        TentacleServer::new(Connection { agent: self, peer })
    }

    /// Trusts exactly `list` from now on (kept in the configuration first, so a restart keeps
    /// it), provided it holds `peer`: a node never makes a tentacle drop the certificate the node
    /// itself presents.
    async fn trust(&self, list: &[String], peer: Option<Thumbprint>) -> Result<(), Status> {
        let mut wanted = list
            .iter()
            .map(|t| t.parse::<Thumbprint>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("trust_clusters: {e}")))?;
        wanted.sort();
        wanted.dedup();
        if !peer.is_some_and(|p| wanted.contains(&p)) {
            tracing::warn!(
                ?peer,
                "ignored a list of cluster certificates without the sender's own"
            );
            return Ok(());
        }
        if wanted == self.cluster.thumbprints() {
            return Ok(());
        }
        // One change at a time: two gateways may say the same at once.
        static SAVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = SAVING.lock().await;
        let home = Home::new(self.home.clone());
        let shown: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        let keep = shown.clone();
        tokio::task::spawn_blocking(move || {
            let mut config = home.load()?;
            config.cluster_thumbprints = keep;
            home.save(&config)
        })
        .await
        .map_err(|e| Status::internal(format!("save the trusted certificates: {e}")))?
        .map_err(|e| Status::internal(format!("save the trusted certificates: {e:#}")))?;
        self.cluster.replace(wanted);
        tracing::info!(trusted = ?shown, "cluster certificates trusted");
        Ok(())
    }
}

/// The service on one connection: the agent, and the certificate the node on it presented.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    agent: Agent,
    peer: Option<Thumbprint>,
}

impl std::ops::Deref for Connection {
    type Target = Agent;
    fn deref(&self) -> &Agent {
        &self.agent
    }
}

type Events = ReceiverStream<Result<ScriptEvent, Status>>;

#[tonic::async_trait]
impl Tentacle for Connection {
    async fn capabilities(
        &self,
        request: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        let ask = request.into_inner();
        if !ask.trust_clusters.is_empty() {
            self.agent.trust(&ask.trust_clusters, self.peer).await?;
        }
        let shells = ["sh", "bash", "pwsh"]
            .into_iter()
            .filter(|s| shell_path(s).is_some())
            .map(str::to_owned)
            .collect();
        Ok(Response::new(CapabilitiesReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            free_disk_bytes: free_disk(&self.work_root),
            shells,
            trusted_clusters: self
                .cluster
                .thumbprints()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }

    async fn push_file(
        &self,
        request: Request<Streaming<FileChunk>>,
    ) -> Result<Response<PushFileReply>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(FileChunk {
                part: Some(file_chunk::Part::Header(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("a push starts with its header")),
        };
        let dest = self.files_root.join(safe_relative(&header.path)?);
        let dir = dest.parent().unwrap_or(&self.files_root).to_owned();
        if header.skip_if_present && present(&dest, &header).await {
            // Answered before the data is read: the sender stops sending.
            tracing::info!(path = %dest.display(), "file already here; not received again");
            return Ok(Response::new(PushFileReply {
                path: dest.display().to_string(),
                size: header.size,
                sha256: header.sha256.to_ascii_lowercase(),
                already_present: true,
            }));
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("create {}: {e}", dir.display())))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".cuttle-push-{}-{n}.partial", std::process::id()));
        let received = self.receive(&header, &mut stream, &tmp).await;
        let checked = received.and_then(|(size, digest)| {
            if size != header.size || digest != header.sha256.to_ascii_lowercase() {
                Err(Status::data_loss(format!(
                    "received {size} bytes with SHA-256 {digest}; expected {} bytes with {}",
                    header.size, header.sha256
                )))
            } else {
                Ok((size, digest))
            }
        });
        let (size, sha256) = match checked {
            Ok(v) => v,
            Err(e) => {
                // Nothing half-received is left behind; the sender simply pushes again.
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| Status::internal(format!("put {} in place: {e}", dest.display())))?;
        tracing::info!(path = %dest.display(), size, "file received");
        Ok(Response::new(PushFileReply {
            path: dest.display().to_string(),
            size,
            sha256,
            already_present: false,
        }))
    }

    type PullFileStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<FileChunk, Status>> + Send>>;

    async fn pull_file(
        &self,
        request: Request<PullFileRequest>,
    ) -> Result<Response<Self::PullFileStream>, Status> {
        let req = request.into_inner();
        let (rel, remove_after) = (req.path, req.remove_after);
        let path = self.files_root.join(safe_relative(&rel)?);
        // Hashed first (one read), then sent (a second read): the header carries the checksum
        // and the file is never held in memory.
        let hashed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || cuttle_proto::files::sha256_file(&path)).await
        };
        let (size, sha256) = match hashed {
            Ok(Ok(h)) => h,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("no file {}", path.display())))
            }
            Ok(Err(e)) => return Err(Status::internal(format!("read {}: {e}", path.display()))),
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        let header = cuttle_proto::v1::FileHeader {
            path: rel,
            size,
            sha256,
            skip_if_present: false,
        };
        let chunks = cuttle_proto::files::chunks(&path, header)
            .await
            .map_err(|e| Status::internal(format!("open {}: {e}", path.display())))?;
        if !remove_after {
            return Ok(Response::new(Box::pin(chunks.map(Ok))));
        }
        // The copy goes once every chunk was taken (its data is held open until then).
        let done = tokio_stream::once(()).filter_map(move |()| {
            let _ = std::fs::remove_file(&path);
            None::<Result<FileChunk, Status>>
        });
        Ok(Response::new(Box::pin(chunks.map(Ok).chain(done))))
    }

    async fn extract_package(
        &self,
        request: Request<ExtractPackageRequest>,
    ) -> Result<Response<ExtractPackageReply>, Status> {
        let req = request.into_inner();
        let package = self.files_root.join(safe_relative(&req.package_path)?);
        let format = cuttle_core::PackageFormat::parse(&req.format)
            .map_err(|e| Status::invalid_argument(e.0))?;
        let destination = safe_relative(&req.destination)?;
        for g in &req.substitute_in_files {
            cuttle_core::validate_glob("substitute_in_files", g)
                .map_err(|e| Status::invalid_argument(e.0))?;
        }
        let apps = self.home.join("Applications");
        let variables = req.variables.into_iter().collect();
        let globs = req.substitute_in_files;
        let done = tokio::task::spawn_blocking(move || {
            crate::extract::extract(&package, format, &apps, &destination, &globs, &variables)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::failed_precondition)?;
        tracing::info!(path = %done.path.display(), files = done.files, "package extracted");
        Ok(Response::new(ExtractPackageReply {
            path: done.path.display().to_string(),
            files: done.files,
            bytes: done.bytes,
            substituted: done.substituted,
            has_deploy_script: done.has_deploy_script,
        }))
    }

    type RunScriptStream = Events;

    async fn run_script(
        &self,
        request: Request<RunScriptRequest>,
    ) -> Result<Response<Events>, Status> {
        let var = |name: &str| request.get_ref().env.get(name).cloned().unwrap_or_default();
        let span = tracing::info_span!(
            "script",
            otel.name = "run script",
            otel.kind = "server",
            cuttle.task.id = %var("CUTTLE_TASK_ID"),
            cuttle.target = %var("CUTTLE_TARGET_NAME"),
            exit_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        continue_from_metadata(&span, request.metadata());
        cuttle_telemetry::trace::record_trace_id(&span);
        self.start_script(request.into_inner(), span.clone())
            .instrument(span)
            .await
    }
}

impl Connection {
    /// Starts a script beneath its reaper and streams its output; `span` (the call's, which
    /// continues the cluster's trace) covers it to its exit, and the script reads its trace in
    /// `TRACEPARENT` to carry it further.
    async fn start_script(
        &self,
        req: RunScriptRequest,
        span: tracing::Span,
    ) -> Result<Response<Events>, Status> {
        let shell = match req.shell.as_str() {
            "" => "sh",
            s => s,
        };
        let shell = shell_path(shell)
            .ok_or_else(|| Status::invalid_argument(format!("no shell {shell:?} here")))?;
        let (dir, temporary) = if req.working_dir.is_empty() {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = self
                .work_root
                .join(format!("script-{}-{n}", std::process::id()));
            (dir, true)
        } else {
            (PathBuf::from(&req.working_dir), false)
        };
        if temporary {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                Status::internal(format!("create working directory {}: {e}", dir.display()))
            })?;
        }
        // The script (its variables substituted, secrets included) goes in a file only this
        // user can read, never on a command line every local user sees in `ps`.
        let file = match write_script(&self.work_root, shell, &req.script).await {
            Ok(f) => f,
            Err(e) => {
                if temporary {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
                return Err(Status::internal(format!("write the script: {e}")));
            }
        };
        // Beneath a reaper (this binary, `__reap`): no process the script starts outlives it,
        // `setsid` or not.
        // This very binary, even after an upgrade replaced its file.
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        // Never the agent's own environment: only the basics, then the task's variables.
        cuttle_proto::script_env::clean(&mut cmd);
        let spawned = cmd
            .arg(crate::reap::ARG)
            .arg(std::process::id().to_string())
            .arg(shell)
            .args(script_args(shell))
            .arg(&file)
            .envs(&req.env)
            .envs(cuttle_telemetry::trace::traceparent_of(&span).map(|tp| ("TRACEPARENT", tp)))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a cancel reaches every process the script started.
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&file).await;
                return Err(Status::internal(format!("start {shell}: {e}")));
            }
        };
        tracing::info!(pid = ?child.id(), "script started");
        let collector = Collector {
            dir: dir.clone(),
            files_root: self.files_root.clone(),
        };
        let (tx, rx) = mpsc::channel(256);
        let out = child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, false, tx.clone(), collector.clone())));
        let err = child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, true, tx.clone(), collector.clone())));
        tokio::spawn(
            async move {
                let pgid = child.id();
                let status = tokio::select! {
                    status = child.wait() => Some(status),
                    // The caller ended the call: cancel.
                    _ = tx.closed() => None,
                };
                if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                    if status.is_none() {
                        // Cancelled: the reaper ends everything beneath it, then itself.
                        // SAFETY: kill has no memory-safety preconditions; the reaper is our
                        // unreaped child, so its pid is still its own.
                        unsafe {
                            libc::kill(pgid, libc::SIGTERM);
                        }
                        let _ = tokio::time::timeout(REAPER_GRACE, child.wait()).await;
                    }
                    // SAFETY: as above; -pgid names the group the reaper leads (a backstop).
                    unsafe {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                }
                let _ = child.wait().await;
                for pump in [out, err].into_iter().flatten() {
                    let _ = tokio::time::timeout(PIPE_DRAIN, pump).await;
                }
                let _ = tokio::fs::remove_file(&file).await;
                if temporary {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
                match status {
                    Some(Ok(s)) => {
                        let code = s.code().unwrap_or(-1);
                        tracing::Span::current().record("exit_code", code);
                        tracing::info!(code, "script ended");
                        let event = script_event::Event::ExitCode(code);
                        let _ = tx.send(Ok(ScriptEvent { event: Some(event) })).await;
                    }
                    Some(Err(e)) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("wait for script: {e}"))))
                            .await;
                    }
                    None => tracing::info!("script cancelled by the cluster; process group killed"),
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Does `dest` already hold the file `header` announces (size, then SHA-256)?
async fn present(dest: &std::path::Path, header: &cuttle_proto::v1::FileHeader) -> bool {
    let same_size = tokio::fs::metadata(dest)
        .await
        .is_ok_and(|m| m.is_file() && m.len() == header.size);
    if !same_size {
        return false;
    }
    let path = dest.to_owned();
    let want = header.sha256.to_ascii_lowercase();
    tokio::task::spawn_blocking(move || cuttle_proto::files::sha256_file(&path))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|(_, sha)| sha == want)
}

/// A pushed file's path: relative, plain components only, so it stays under the files root.
fn safe_relative(path: &str) -> Result<PathBuf, Status> {
    cuttle_core::validate_relative_path("file path", path)
        .map(|()| PathBuf::from(path))
        .map_err(|e| Status::invalid_argument(e.0))
}

impl Agent {
    /// Receives a pushed file into a temporary name beside its destination; returns the
    /// temporary path with the size and SHA-256 of what arrived.
    async fn receive(
        &self,
        header: &cuttle_proto::v1::FileHeader,
        stream: &mut Streaming<FileChunk>,
        tmp: &std::path::Path,
    ) -> Result<(u64, String), Status> {
        let io = |what: &str, e: std::io::Error| {
            Status::internal(format!("{what} {}: {e}", tmp.display()))
        };
        let mut file = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| io("create", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.message().await? {
            let Some(file_chunk::Part::Data(bytes)) = chunk.part else {
                return Err(Status::invalid_argument("a second header in one push"));
            };
            size += bytes.len() as u64;
            if size > header.size {
                return Err(Status::invalid_argument(format!(
                    "more data than the announced {} bytes",
                    header.size
                )));
            }
            hasher.update(&bytes);
            file.write_all(&bytes).await.map_err(|e| io("write", e))?;
        }
        file.flush().await.map_err(|e| io("write", e))?;
        file.sync_all().await.map_err(|e| io("sync", e))?;
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((size, digest))
    }
}

fn shell_path(name: &str) -> Option<&'static str> {
    let candidates: &[&'static str] = match name {
        "sh" => &["/bin/sh"],
        "bash" => &["/bin/bash", "/usr/bin/bash"],
        // PowerShell, where it is installed.
        "pwsh" => &[
            "/usr/bin/pwsh",
            "/usr/local/bin/pwsh",
            "/opt/microsoft/powershell/7/pwsh",
        ],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
}

/// How each shell is told to run a script file (its path follows).
fn script_args(shell: &str) -> &'static [&'static str] {
    if shell.ends_with("pwsh") {
        &["-NoProfile", "-NonInteractive", "-File"]
    } else {
        &[]
    }
}

/// Writes `script` to a new file readable by this user only (0600 from creation), under the
/// tentacle's own work folder; its path. Removed when the script ends.
async fn write_script(
    work_root: &std::path::Path,
    shell: &str,
    script: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = work_root.join(".scripts");
    // PowerShell runs only files named .ps1.
    let ext = if shell.ends_with("pwsh") { "ps1" } else { "sh" };
    let path = dir.join(format!("{}-{n}.{ext}", std::process::id()));
    let (p, text) = (path.clone(), script.to_owned());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        f.write_all(text.as_bytes())?;
        f.flush()
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(path)
}

pub(crate) fn free_disk(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) == 0 {
            st.f_bavail as u64 * st.f_frsize as u64
        } else {
            0
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends a script's output line by line as it is produced.
/// Where a script runs and where its artifacts' copies go.
#[derive(Clone)]
struct Collector {
    dir: PathBuf,
    files_root: PathBuf,
}

impl Collector {
    /// Copies the file a `createArtifact` line names while the script's folder still exists;
    /// the line as passed on (naming the copy, or saying why there is none).
    async fn collect(&self, text: String) -> String {
        let Some(asked) = cuttle_core::plan::parse_create_artifact(&text) else {
            return text;
        };
        let mut a = match asked {
            Ok(a) => a,
            Err(_) => return text, // the caller says why it is malformed
        };
        // Only this tentacle says where a copy is, or why there is none.
        a.held = None;
        a.failed = None;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let held = format!(".artifacts/{}-{n}", std::process::id());
        let (dir, path) = (self.dir.clone(), a.path.clone());
        let to = self.files_root.join(&held);
        // Only a regular file inside the script's folder, reached without following links.
        let copied = tokio::task::spawn_blocking(move || {
            let mut from = crate::beneath::open_beneath(&dir, &path)?;
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d)?;
            }
            let mut out = std::fs::File::create(&to)?;
            std::io::copy(&mut from, &mut out).map(|_| ())
        })
        .await;
        match copied {
            Ok(Ok(())) => {
                a.held = Some(held);
                cuttle_core::plan::create_artifact_line(&a)
            }
            Ok(Err(e)) => {
                a.failed = Some(e.to_string());
                cuttle_core::plan::create_artifact_line(&a)
            }
            Err(e) => {
                a.failed = Some(e.to_string());
                cuttle_core::plan::create_artifact_line(&a)
            }
        }
    }
}

async fn pump<R: AsyncRead + Unpin>(
    r: R,
    stderr: bool,
    tx: mpsc::Sender<Result<ScriptEvent, Status>>,
    collector: Collector,
) {
    let mut lines = OutputLines::new(r);
    while let Some((text, continues)) = lines.next_piece().await {
        let text = collector.collect(text).await;
        let event = script_event::Event::Line(OutputLine {
            at_ms: now_ms(),
            stderr,
            text,
            continues,
        });
        if tx
            .send(Ok(ScriptEvent { event: Some(event) }))
            .await
            .is_err()
        {
            return; // the caller is gone
        }
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use crate::home::Config;

    fn thumb(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[tokio::test]
    async fn trusts_what_the_cluster_says_only_with_the_senders_own_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("cuttle-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let home = Home::new(dir.clone());
        let config = Config {
            cluster_thumbprint: thumb('A'),
            ..Config::default()
        };
        home.save(&config).unwrap();
        let a: Thumbprint = thumb('A').parse().unwrap();
        let agent = Agent {
            work_root: dir.join("work"),
            files_root: dir.join("files"),
            cluster: Trusted::new(config.trusted_clusters().unwrap()),
            home: dir.clone(),
        };
        // A list without the sender's own certificate changes nothing.
        agent.trust(&[thumb('B')], Some(a)).await.unwrap();
        assert_eq!(agent.cluster.thumbprints(), vec![a]);
        agent.trust(&[thumb('B')], None).await.unwrap();
        assert_eq!(agent.cluster.thumbprints(), vec![a]);
        // Garbage is refused.
        assert!(agent.trust(&["zz".into()], Some(a)).await.is_err());
        // A list with it is trusted at once, and kept across restarts.
        agent
            .trust(&[thumb('B'), thumb('A')], Some(a))
            .await
            .unwrap();
        let b: Thumbprint = thumb('B').parse().unwrap();
        assert_eq!(agent.cluster.thumbprints(), vec![a, b]);
        assert_eq!(home.load().unwrap().trusted_clusters().unwrap(), vec![a, b]);
        // The sender may drop the others, never itself.
        agent.trust(&[thumb('B')], Some(b)).await.unwrap();
        assert_eq!(agent.cluster.thumbprints(), vec![b]);
        assert_eq!(home.load().unwrap().trusted_clusters().unwrap(), vec![b]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
