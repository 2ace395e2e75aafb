//! The operations on document resources, under REST's handlers and gRPC's methods alike: each
//! takes the caller and what the client said (the space as named, an id as written, the JSON of
//! a write), checks it, writes it with its audit event, and answers the document or a typed
//! error. Neither protocol does any of this itself.

use cuttle_storage::{audit_as, Audit, Document, DocumentWrite, Written};
use serde_json::{json, Value};

use super::{
    doc_number, parse_write, required_version, resolve_space, space_id, stale, DocumentResource,
};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

fn missing<R: DocumentResource>(raw: &str) -> ApiError {
    ApiError::not_found(format!("no {} {raw}", R::KIND.to_lowercase()))
}

/// Every document of the kind in the space, in their order.
pub(crate) async fn list<R: DocumentResource>(
    s: &AppState,
    space: &str,
) -> Result<Vec<Document>, ApiError> {
    let space = resolve_space(s, space).await?;
    Ok(s.store.list_documents(&space_id(&space), R::KIND).await?)
}

/// One document, by its id as the client wrote it (404 for an unknown or malformed one).
pub(crate) async fn get<R: DocumentResource>(
    s: &AppState,
    space: &str,
    raw: &str,
) -> Result<Document, ApiError> {
    let space = resolve_space(s, space).await?;
    let id = doc_number::<R>(raw)?;
    s.store
        .get_document(&space_id(&space), R::KIND, id)
        .await?
        .ok_or_else(|| missing::<R>(raw))
}

/// Creates a document from a write (`body`: its JSON, without `version`).
pub(crate) async fn create<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    space: &str,
    body: Value,
) -> Result<Document, ApiError> {
    let space = resolve_space(s, space).await?;
    let w = parse_write::<R>(body)?;
    R::check(s, &space, &w, None).await?;
    let stored = R::merge(None, &w)?;
    let sid = space_id(&space);
    let by = caller.clone();
    let audit: Audit<Document> = Box::new(move |d| {
        by.event(
            &format!("{}.create", R::EVENT),
            format!("{}{}", R::ID_PREFIX, d.id),
            json!({"name": d.name, "space": d.space}),
        )
    });
    Ok(s.store
        .create_document(
            &DocumentWrite {
                space: &sid,
                kind: R::KIND,
                name: R::name(&w),
                body: &stored,
            },
            Some(audit),
        )
        .await?)
}

/// Replaces a document whole (its parts written through endpoints of their own stay) at the
/// version the client read.
pub(crate) async fn replace<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    body: Value,
    version: Option<i64>,
) -> Result<Document, ApiError> {
    let space = resolve_space(s, space).await?;
    let id = doc_number::<R>(raw)?;
    let version = required_version(version)?;
    // What the write does not cover is kept as it was at the version the client read (a newer
    // one makes the write stale anyway).
    let existing = s.store.get_document(&space_id(&space), R::KIND, id).await?;
    update::<R>(s, caller, &space, (id, raw, version), body, existing).await
}

/// Changes what `changes` names (a JSON merge patch, RFC 7396) at the version the client read.
pub(crate) async fn patch<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    changes: Value,
    version: Option<i64>,
) -> Result<Document, ApiError> {
    let space = resolve_space(s, space).await?;
    let id = doc_number::<R>(raw)?;
    let version = required_version(version)?;
    let doc = s
        .store
        .get_document(&space_id(&space), R::KIND, id)
        .await?
        .ok_or_else(|| missing::<R>(raw))?;
    if doc.version != version {
        return Err(stale::<R>(id, doc.version));
    }
    let mut current = doc.body.clone();
    if let Value::Object(m) = &mut current {
        for part in R::PARTS {
            m.remove(*part);
        }
        m.insert("name".into(), Value::String(doc.name.clone()));
    }
    merge_patch(&mut current, changes);
    update::<R>(s, caller, &space, (id, raw, version), current, Some(doc)).await
}

/// RFC 7396: `patch`'s members replace `target`'s, objects merging member by member; `null`
/// removes the member.
fn merge_patch(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge_patch(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// Writes `body` (a whole write of `R`) over document `id` (named `raw` by the client) at
/// `version`: checked, merged with the parts of `existing` (as read by the caller) it does not
/// cover, audited.
async fn update<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    space: &Document,
    (id, raw, version): (i64, &str, i64),
    body: Value,
    existing: Option<Document>,
) -> Result<Document, ApiError> {
    let w = parse_write::<R>(body)?;
    R::check(s, space, &w, Some(id)).await?;
    let sid = space_id(space);
    let stored = R::merge(existing.as_ref().map(|d| &d.body), &w)?;
    let by = caller.clone();
    let audit: Audit<Document> = Box::new(move |d| {
        by.event(
            &format!("{}.update", R::EVENT),
            format!("{}{}", R::ID_PREFIX, d.id),
            json!({"name": d.name, "version": d.version}),
        )
    });
    let write = DocumentWrite {
        space: &sid,
        kind: R::KIND,
        name: R::name(&w),
        body: &stored,
    };
    match s
        .store
        .update_document(id, version, &write, Some(audit))
        .await?
    {
        Written::Done(doc) => Ok(doc),
        Written::NotFound => Err(missing::<R>(raw)),
        Written::Stale { current } => Err(stale::<R>(id, current)),
    }
}

/// Deletes a document nothing refers to any more, at `version` when the client gave one.
pub(crate) async fn delete<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    (space, raw): (&str, &str),
    version: Option<i64>,
) -> Result<(), ApiError> {
    let space = resolve_space(s, space).await?;
    let id = doc_number::<R>(raw)?;
    let sid = space_id(&space);
    let doc = s
        .store
        .get_document(&sid, R::KIND, id)
        .await?
        .ok_or_else(|| missing::<R>(raw))?;
    R::check_delete(s, &space, &doc).await?;
    let audit = audit_as(caller.event(
        &format!("{}.delete", R::EVENT),
        format!("{}{id}", R::ID_PREFIX),
        json!({"name": doc.name}),
    ));
    match s
        .store
        .delete_document(&sid, R::KIND, id, version, Some(audit))
        .await?
    {
        Written::Done(_) => Ok(()),
        Written::NotFound => Err(missing::<R>(raw)),
        Written::Stale { current } => Err(stale::<R>(id, current)),
    }
}

/// Puts the documents of the kind in the order `ids` gives (every one of them, once); the
/// documents in their new order.
pub(crate) async fn reorder<R: DocumentResource>(
    s: &AppState,
    caller: &Caller,
    space: &str,
    raw_ids: &[String],
) -> Result<Vec<Document>, ApiError> {
    let space = resolve_space(s, space).await?;
    let ids = raw_ids
        .iter()
        .map(|raw| {
            doc_number::<R>(raw).map_err(|_| {
                ApiError::bad_request(format!(
                    "ids: {raw:?} is not a {} id",
                    R::KIND.to_lowercase()
                ))
            })
        })
        .collect::<Result<Vec<i64>, _>>()?;
    let sid = space_id(&space);
    let audit = audit_as(caller.event(
        &format!("{}.reorder", R::EVENT),
        &sid,
        json!({"ids": raw_ids}),
    ));
    if !s
        .store
        .reorder_documents(&sid, R::KIND, &ids, Some(audit))
        .await?
    {
        return Err(ApiError::bad_request(format!(
            "ids: name every {} of the space exactly once",
            R::KIND.to_lowercase()
        )));
    }
    Ok(s.store.list_documents(&sid, R::KIND).await?)
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn members_replace_objects_merge_and_null_removes() {
        let mut doc = json!({"name": "Shop", "lifecycle_id": "Lifecycles-2",
            "retention": {"releases_to_keep": 5, "releases_per_environment": 2}, "tags": [1, 2]});
        merge_patch(
            &mut doc,
            json!({"retention": {"releases_to_keep": 20}, "lifecycle_id": null, "tags": [3]}),
        );
        assert_eq!(
            doc,
            json!({"name": "Shop",
                "retention": {"releases_to_keep": 20, "releases_per_environment": 2}, "tags": [3]})
        );
    }
}
