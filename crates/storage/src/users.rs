//! The web UI's users (`cuttle-server admin create`): a name, a scope and an Argon2id password
//! hash, kept as cluster-wide documents of kind `User` (space `""`), so they live on every
//! database with no SQL of their own. A user's document version changes with each new password:
//! sessions name the version they were made at, so a new password (or deleting the user) ends
//! every session made before it. No API route reads this kind.

use cuttle_core::{Scope, UnixMs};
use serde_json::json;

use crate::db::{Audit, Document, DocumentWrite, Store, Written};
use crate::{Error, Result};

pub const USER: &str = "User";
/// Users belong to the cluster, not a space.
const SPACE: &str = "";
/// How users are named in audit events and sessions: `Users-{id}`.
pub const USER_PREFIX: &str = "Users-";

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// The PHC string of the password's Argon2id hash.
    pub password_hash: String,
    /// The document's version: one more at each new password.
    pub version: i64,
    pub created_at: UnixMs,
}

/// Letters, digits and `. _ - @`, 1 to 100 of them: a name that reads the same everywhere it
/// is shown (audit events, the page header).
pub fn check_user_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: 1 to 100 letters, digits, '.', '_', '-' or '@'"
        ))
    }
}

fn user_of(doc: Document) -> Result<User> {
    let bad = |why: &str| Error::Database(format!("user {} ({}): {why}", doc.id, doc.name));
    let scope = doc.body["scope"]
        .as_str()
        .ok_or_else(|| bad("no scope"))?
        .parse::<Scope>()
        .map_err(|e| bad(&e.to_string()))?;
    let password_hash = doc.body["password"]
        .as_str()
        .filter(|p| p.starts_with("$argon2"))
        .ok_or_else(|| bad("no password hash"))?
        .to_owned();
    Ok(User {
        id: doc.id,
        name: doc.name,
        scope,
        password_hash,
        version: doc.version,
        created_at: doc.created_at,
    })
}

impl Store {
    /// Stores a new user with its audit event; a name already taken (whatever its case) is a
    /// [`Error::Conflict`].
    pub async fn create_user(
        &self,
        name: &str,
        scope: Scope,
        password_hash: &str,
        audit: Option<Audit<Document>>,
    ) -> Result<User> {
        check_user_name(name).map_err(Error::Invalid)?;
        let body = json!({"scope": scope.as_str(), "password": password_hash});
        let doc = self
            .create_document(
                &DocumentWrite {
                    space: SPACE,
                    kind: USER,
                    name,
                    body: &body,
                },
                audit,
            )
            .await?;
        user_of(doc)
    }

    /// The user of this name (whatever its case), if any.
    pub async fn find_user(&self, name: &str) -> Result<Option<User>> {
        self.find_document(SPACE, USER, name)
            .await?
            .map(user_of)
            .transpose()
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        self.get_document(SPACE, USER, id)
            .await?
            .map(user_of)
            .transpose()
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.list_documents(SPACE, USER)
            .await?
            .into_iter()
            .map(user_of)
            .collect()
    }

    /// Gives `user` a new password (checked against the version read, so two changes at once
    /// cannot both win), ending the sessions made with the old one.
    pub async fn set_user_password(
        &self,
        user: &User,
        password_hash: &str,
        audit: Option<Audit<Document>>,
    ) -> Result<User> {
        let body = json!({"scope": user.scope.as_str(), "password": password_hash});
        let w = DocumentWrite {
            space: SPACE,
            kind: USER,
            name: &user.name,
            body: &body,
        };
        match self
            .update_document(user.id, user.version, &w, audit)
            .await?
        {
            Written::Done(doc) => user_of(doc),
            Written::NotFound => Err(Error::Invalid(format!(
                "user {:?} no longer exists",
                user.name
            ))),
            Written::Stale { .. } => Err(Error::Conflict(format!(
                "user {:?} changed meanwhile; try again",
                user.name
            ))),
        }
    }

    /// Deletes a user (false when there is none); their sessions end with them.
    pub async fn delete_user(&self, user: &User, audit: Option<Audit<()>>) -> Result<bool> {
        Ok(matches!(
            self.delete_document(SPACE, USER, user.id, None, audit)
                .await?,
            Written::Done(_)
        ))
    }
}
