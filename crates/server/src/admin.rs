//! `cuttle-server admin …`: the web UI's users — people who sign in with a name and a password
//! instead of an API key. Run on any machine that reaches the database (like `api-key create`):
//! the password is read from standard input (`--password-stdin`, one line) or typed at a
//! terminal without echo, never taken from the command line, and stored as an Argon2id hash.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use cuttle_core::{NewEvent, Scope};
use cuttle_storage::passwords::{check_password, hash_password};
use cuttle_storage::{check_user_name, Audit, Document, Store, USER_PREFIX};
use serde_json::json;

/// Who the audit trail names for these commands.
const ACTOR: &str = "cuttle-server admin";

fn event(action: &str, target: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        actor: ACTOR.into(),
        action: action.into(),
        target,
        client_address: "local".into(),
        details,
    }
}

/// Turns the terminal's echo off (or back on) for standard input.
fn echo(on: bool) {
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios; failures (not a
    // terminal) leave everything as it was.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return;
        }
        if on {
            t.c_lflag |= libc::ECHO;
        } else {
            t.c_lflag &= !libc::ECHO;
        }
        libc::tcsetattr(0, libc::TCSANOW, &t);
    }
}

fn prompt(text: &str) -> Result<String> {
    eprint!("{text}");
    std::io::stderr().flush().ok();
    echo(false);
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    echo(true);
    eprintln!();
    read.context("read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The new password: one line of standard input, or typed twice at a terminal.
pub(crate) fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if std::io::stdin().is_terminal() {
        let first = prompt("Password: ")?;
        if prompt("Again: ")? != first {
            bail!("the two passwords differ");
        }
        first
    } else {
        bail!("give the password on standard input with --password-stdin, or run at a terminal");
    };
    check_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

/// `admin create`: a new user of `scope` (admin unless said otherwise).
pub(crate) async fn create(store: &Store, name: &str, scope: Scope, password: &str) -> Result<()> {
    check_user_name(name).map_err(anyhow::Error::msg)?;
    if scope == Scope::RegisterTarget {
        bail!("a person signs in with admin, operator, deployer or reader, not register-target");
    }
    let hash = hash_password(password)?;
    let details = json!({"name": name, "scope": scope.as_str()});
    let audit: Audit<Document> = Box::new(move |d| {
        event(
            "user.create",
            format!("{USER_PREFIX}{}", d.id),
            details.clone(),
        )
    });
    let user = store
        .create_user(name, scope, &hash, Some(audit))
        .await
        .with_context(|| format!("create user {name:?}"))?;
    println!(
        "created {} user {:?} ({USER_PREFIX}{}): sign in to the web UI with this name and password",
        user.scope, user.name, user.id
    );
    Ok(())
}

async fn existing(store: &Store, name: &str) -> Result<cuttle_storage::User> {
    store
        .find_user(name)
        .await?
        .with_context(|| format!("no user named {name:?} (cuttle-server admin list)"))
}

/// `admin set-password`: a new password; the user's sessions end.
pub(crate) async fn set_password(store: &Store, name: &str, password: &str) -> Result<()> {
    let user = existing(store, name).await?;
    let hash = hash_password(password)?;
    let target = format!("{USER_PREFIX}{}", user.id);
    let audit: Audit<Document> =
        Box::new(move |_| event("user.password", target.clone(), json!({})));
    store.set_user_password(&user, &hash, Some(audit)).await?;
    println!(
        "new password for {:?}: its earlier sessions have ended",
        user.name
    );
    Ok(())
}

/// `admin delete`: the user and their sessions end.
pub(crate) async fn delete(store: &Store, name: &str) -> Result<()> {
    let user = existing(store, name).await?;
    let audit = cuttle_storage::audit_as(event(
        "user.delete",
        format!("{USER_PREFIX}{}", user.id),
        json!({"name": user.name}),
    ));
    if store.delete_user(&user, Some(audit)).await? {
        println!("deleted user {:?}; their sessions have ended", user.name);
    }
    Ok(())
}

/// `admin list`: every user with their scope (never a hash).
pub(crate) async fn list(store: &Store) -> Result<()> {
    for u in store.list_users().await? {
        println!(
            "{USER_PREFIX}{}\t{}\t{}\tcreated {}",
            u.id,
            u.name,
            u.scope,
            cuttle_core::format_rfc3339_ms(u.created_at)
        );
    }
    Ok(())
}
