//! Files brought into the shared store as a task's artifacts: pulled from a target (checked
//! against the size and SHA-256 its tentacle announced), or copied from a script's folder on the
//! node; either way received under `Artifacts/InProgress/{node}/`, synced, and put in place only
//! whole under a name no other artifact of the task has.

use std::path::Path;
use std::process::Stdio;

use cuttle_core::plan::ArtifactRequest;
use cuttle_core::{Comms, TargetRecord};
use cuttle_proto::v1::{file_chunk, FileChunk, PullFileRequest, RelayPullFile};
use cuttle_storage::Execution;
use tonic::Streaming;

use crate::ctx::TaskCtx;
use crate::sandbox::WorkDir;
use crate::tentacles::{listening, relayed};

/// Pulls `path` (relative to the target's files folder) into the store as artifact `name` of
/// the task; its id, size and SHA-256. Errors name the target.
pub(crate) async fn pull_from(
    key: Execution,
    t: &TargetRecord,
    path: &str,
    remove_after: bool,
    name: &str,
    ctx: &TaskCtx,
) -> Result<(String, u64, String), String> {
    let request = PullFileRequest {
        path: path.to_owned(),
        remove_after,
    };
    let stream = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let relay = RelayPullFile {
                    target_id: t.id.0,
                    request: Some(request.clone()),
                };
                async move { client.pull_file(relay).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .pull_file(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    let shared = &ctx.targets.shared;
    let temp = shared
        .artifact_temp(&ctx.node)
        .map_err(|e| format!("{}: {e}", t.name))?;
    let received = receive(stream, &temp).await;
    let placed = received.and_then(|(size, sha256)| {
        shared
            .place_artifact(&temp, key.task, &t.name, name)
            .map(|id| (id, size, sha256))
            .map_err(|e| e.to_string())
    });
    if placed.is_err() {
        // Half-received: nothing is put in place.
        let _ = tokio::fs::remove_file(&temp).await;
    }
    placed.map_err(|e| format!("{}: {e}", t.name))
}

/// Writes a pulled file to `temp`, checking it against its header; fsynced when it returns Ok.
async fn receive(mut stream: Streaming<FileChunk>, temp: &Path) -> Result<(u64, String), String> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let header = match stream.message().await.map_err(|s| s.message().to_owned())? {
        Some(FileChunk {
            part: Some(file_chunk::Part::Header(h)),
        }) => h,
        _ => return Err("the file did not start with its header".into()),
    };
    let io = |e: std::io::Error| format!("write {}: {e}", temp.display());
    let mut file = tokio::fs::File::create(temp).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
        let Some(file_chunk::Part::Data(bytes)) = chunk.part else {
            return Err("a second header in one file".into());
        };
        size += bytes.len() as u64;
        if size > header.size {
            return Err(format!("more than the announced {} bytes", header.size));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    let sha256 = cuttle_proto::files::hex(&hasher.finalize());
    if size != header.size || sha256 != header.sha256 {
        return Err(format!(
            "received {size} bytes with SHA-256 {sha256}; the tentacle announced {} bytes with {}",
            header.size, header.sha256
        ));
    }
    Ok((size, sha256))
}

/// Collects the artifacts a script on a target asked for (the copies its tentacle holds),
/// logging each; a file that could not be collected is logged, not fatal.
pub(crate) async fn collect_from_target(
    key: Execution,
    t: &TargetRecord,
    asked: Vec<ArtifactRequest>,
    ctx: &TaskCtx,
) {
    for a in asked {
        let line = match &a.held {
            None => format!(
                "WARN  [{}] artifact {:?} was not collected: {}",
                t.name,
                a.name,
                a.failed
                    .clone()
                    .unwrap_or_else(|| format!("the tentacle could not read {}", a.path))
            ),
            Some(held) => match pull_from(key, t, held, true, &a.name, ctx).await {
                Ok((id, size, _)) => format!(
                    "INFO  [{}] artifact {:?} collected ({size} bytes) as {id}",
                    t.name, a.name
                ),
                Err(e) => format!("WARN  artifact {:?} was not collected: {e}", a.name),
            },
        };
        ctx.logs.line(key, line).await;
    }
}

/// Checks, in the script's own sandbox and as its user, that `$1` resolves to a regular file
/// inside the working directory, then writes it to standard output.
const READ_ARTIFACT: &str = r#"d=$(pwd -P) || exit 3
p=$(realpath -e -- "$1" 2>/dev/null) || { echo "there is no such file" >&2; exit 3; }
case "$p" in "$d"/*) ;; *) echo "it leads out of the script's working directory" >&2; exit 3;; esac
[ -f "$p" ] || { echo "it is not a regular file" >&2; exit 3; }
exec cat -- "$p""#;

/// Copies the artifacts a script on this node asked for out of its work directory, logging
/// each. Read in the script's sandbox as its user, so a script can hand over only what it
/// could read itself, and only from its own directory.
pub(crate) async fn collect_on_node(
    key: Execution,
    dir: &WorkDir,
    asked: Vec<ArtifactRequest>,
    ctx: &TaskCtx,
) {
    let source = format!("@{}", ctx.node);
    for a in asked {
        let line = match copy_out(key, dir, &a, &source, ctx).await {
            Ok((id, size)) => format!(
                "INFO  artifact {:?} collected ({size} bytes) as {id}",
                a.name
            ),
            Err(e) => format!(
                "WARN  artifact {:?} was not collected: {}: {e}",
                a.name, a.path
            ),
        };
        ctx.logs.line(key, line).await;
    }
}

async fn copy_out(
    key: Execution,
    dir: &WorkDir,
    a: &ArtifactRequest,
    source: &str,
    ctx: &TaskCtx,
) -> Result<(String, u64), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    cuttle_core::plan::validate_artifact_path(&a.path).map_err(|e| e.to_string())?;
    let shared = &ctx.targets.shared;
    let temp = shared.artifact_temp(&ctx.node).map_err(|e| e.to_string())?;
    let mut child = ctx
        .sandbox
        .helper(dir, &["/bin/sh", "-c", READ_ARTIFACT, "sh", &a.path])?
        .spawn(Stdio::piped(), Stdio::piped())
        .map_err(|e| format!("start the sandbox: {e}"))?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the sandbox's output is missing".into());
    };
    let copied = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        let n = tokio::io::copy(&mut stdout, &mut file).await?;
        file.flush().await?;
        file.sync_all().await?;
        Ok::<u64, std::io::Error>(n)
    }
    .await;
    let mut why = String::new();
    let _ = stderr.take(1024).read_to_string(&mut why).await;
    let status = child.wait().await.map_err(|e| e.to_string());
    let placed = match (copied, status) {
        (Ok(n), Ok(st)) if st.success() => shared
            .place_artifact(&temp, key.task, source, &a.name)
            .map(|id| (id, n))
            .map_err(|e| e.to_string()),
        (Err(e), _) => Err(format!("copy: {e}")),
        (_, Err(e)) => Err(e),
        (Ok(_), Ok(_)) => Err(why.trim().to_owned()),
    };
    if placed.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    placed
}
