//! The documents area in SQLite.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::super::sqlite::{db_err, insert_event, Sqlite, NOW};
use super::{DocumentRow, DocumentWrite, RowWritten, DOCUMENT_COLUMNS};
use crate::db::Audit;
use crate::{Error, Result};

fn read(r: &Row<'_>) -> rusqlite::Result<DocumentRow> {
    Ok(DocumentRow {
        id: r.get(0)?,
        space: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        position: r.get(4)?,
        version: r.get(5)?,
        body: r.get(6)?,
        created_at: r.get(7)?,
        modified_at: r.get(8)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn by_id(tx: &Transaction<'_>, id: i64) -> Result<Option<DocumentRow>> {
    tx.query_row(
        &format!("SELECT {DOCUMENT_COLUMNS} FROM documents WHERE seq = ?1"),
        [id],
        read,
    )
    .optional()
    .map_err(db_err)
}

impl Sqlite {
    pub(in crate::db) async fn create_document(
        &self,
        w: &DocumentWrite<'_>,
        key: &str,
        body: &str,
        audit: Option<Audit<super::Document>>,
    ) -> Result<DocumentRow> {
        let (space, kind, name) = (
            w.space.to_owned(),
            w.kind.to_owned(),
            w.name.trim().to_owned(),
        );
        let (key, body) = (key.to_owned(), body.to_owned());
        self.write(move |tx| {
            let id: i64 = tx
                .query_row(
                    &format!(
                        "INSERT INTO documents (space, kind, name, name_key, position, version,
                             body, created_at_ms, modified_at_ms)
                         VALUES (?1, ?2, ?3, ?4,
                             (SELECT COALESCE(MAX(position), 0) + 1 FROM documents
                              WHERE space = ?1 AND kind = ?2),
                             1, ?5, {NOW}, {NOW})
                         RETURNING seq"
                    ),
                    params![space, kind, name, key, body],
                    |r| r.get(0),
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        Error::Conflict(e.to_string())
                    } else {
                        db_err(e)
                    }
                })?;
            let row =
                by_id(tx, id)?.ok_or_else(|| Error::Database("insert returned no row".into()))?;
            if audit.is_some() {
                insert_event(tx, audit.as_ref(), Some(&row.clone().parse()?))?;
            }
            Ok(row)
        })
        .await
    }

    pub(in crate::db) async fn get_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
    ) -> Result<Option<DocumentRow>> {
        let (space, kind) = (space.to_owned(), kind.to_owned());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE seq = ?1 AND space = ?2 AND kind = ?3"
                ),
                params![id, space, kind],
                read,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn find_document(
        &self,
        space: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<DocumentRow>> {
        let (space, kind, key) = (space.to_owned(), kind.to_owned(), key.to_owned());
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE space = ?1 AND kind = ?2 AND name_key = ?3"
                ),
                params![space, kind, key],
                read,
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    pub(in crate::db) async fn list_documents(
        &self,
        space: &str,
        kind: &str,
    ) -> Result<Vec<DocumentRow>> {
        let (space, kind) = (space.to_owned(), kind.to_owned());
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE space = ?1 AND kind = ?2 ORDER BY position, seq"
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map(params![space, kind], read)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::db) async fn update_document(
        &self,
        id: i64,
        expected: i64,
        w: &DocumentWrite<'_>,
        key: &str,
        body: &str,
        audit: Option<Audit<super::Document>>,
    ) -> Result<RowWritten> {
        let (space, kind, name) = (
            w.space.to_owned(),
            w.kind.to_owned(),
            w.name.trim().to_owned(),
        );
        let (key, body) = (key.to_owned(), body.to_owned());
        self.write(move |tx| {
            let Some(current) = by_id(tx, id)?.filter(|r| r.space == space && r.kind == kind)
            else {
                return Ok(RowWritten::NotFound);
            };
            if current.version != expected {
                return Ok(RowWritten::Stale {
                    current: current.version,
                });
            }
            tx.execute(
                &format!(
                    "UPDATE documents SET name = ?2, name_key = ?3, body = ?4,
                         version = version + 1, modified_at_ms = {NOW}
                     WHERE seq = ?1"
                ),
                params![id, name, key, body],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict(e.to_string())
                } else {
                    db_err(e)
                }
            })?;
            let row =
                by_id(tx, id)?.ok_or_else(|| Error::Database("updated row vanished".into()))?;
            if audit.is_some() {
                insert_event(tx, audit.as_ref(), Some(&row.clone().parse()?))?;
            }
            Ok(RowWritten::Done(row))
        })
        .await
    }

    pub(in crate::db) async fn delete_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
        expected: Option<i64>,
        audit: Option<Audit<()>>,
    ) -> Result<RowWritten> {
        let (space, kind) = (space.to_owned(), kind.to_owned());
        self.write(move |tx| {
            let Some(current) = by_id(tx, id)?.filter(|r| r.space == space && r.kind == kind)
            else {
                return Ok(RowWritten::NotFound);
            };
            if expected.is_some_and(|v| v != current.version) {
                return Ok(RowWritten::Stale {
                    current: current.version,
                });
            }
            tx.execute("DELETE FROM documents WHERE seq = ?1", [id])
                .map_err(db_err)?;
            insert_event(tx, audit.as_ref(), Some(&()))?;
            Ok(RowWritten::Done(current))
        })
        .await
    }

    pub(in crate::db) async fn reorder_documents(
        &self,
        space: &str,
        kind: &str,
        ids: &[i64],
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let (space, kind, ids) = (space.to_owned(), kind.to_owned(), ids.to_vec());
        self.write(move |tx| {
            let count: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM documents WHERE space = ?1 AND kind = ?2",
                    params![space, kind],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if count != ids.len() as i64 {
                return Ok(false);
            }
            for (i, id) in ids.iter().enumerate() {
                let n = tx
                    .execute(
                        "UPDATE documents SET position = ?1 WHERE seq = ?2 AND space = ?3 AND kind = ?4",
                        params![i as i64 + 1, id, space, kind],
                    )
                    .map_err(db_err)?;
                if n == 0 {
                    // Dropping the transaction undoes the positions set so far.
                    return Err(Error::Conflict(format!("no document {id} of this kind")));
                }
            }
            insert_event(tx, audit.as_ref(), Some(&()))?;
            Ok(true)
        })
        .await
        .or_else(|e| match e {
            Error::Conflict(_) => Ok(false),
            other => Err(other),
        })
    }
}
