//! The documents area in PostgreSQL.

use tokio_postgres::{Row, Transaction};

use super::super::postgres::{checked_write, insert_event, Failed, Postgres, TxEnd, NOW};
use super::{Document, DocumentRow, DocumentWrite, RowWritten, DOCUMENT_COLUMNS};
use crate::db::Audit;
use crate::Result;

fn read(r: &Row) -> DocumentRow {
    DocumentRow {
        id: r.get(0),
        space: r.get(1),
        kind: r.get(2),
        name: r.get(3),
        position: r.get(4),
        version: r.get(5),
        body: r.get(6),
        created_at: r.get(7),
        modified_at: r.get(8),
    }
}

/// The row, locked until the transaction ends, if it is of this space and kind.
async fn locked(
    tx: &Transaction<'_>,
    space: &str,
    kind: &str,
    id: i64,
) -> std::result::Result<Option<DocumentRow>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {DOCUMENT_COLUMNS} FROM documents
                 WHERE seq = $1 AND space = $2 AND kind = $3 FOR UPDATE"
            ),
            &[&id, &space, &kind],
        )
        .await?;
    Ok(row.as_ref().map(read))
}

impl Postgres {
    /// Writes the audit event of a change to a document, built from the document as written.
    async fn audit_document(
        tx: &Transaction<'_>,
        audit: Option<&Audit<Document>>,
        row: &DocumentRow,
    ) -> std::result::Result<(), Failed> {
        if audit.is_some() {
            let doc = row.clone().parse().map_err(Failed::Row)?;
            insert_event(tx, audit, Some(&doc)).await?;
        }
        Ok(())
    }

    pub(in crate::db) async fn create_document(
        &self,
        w: &DocumentWrite<'_>,
        key: &str,
        body: &str,
        audit: Option<Audit<Document>>,
    ) -> Result<DocumentRow> {
        let done = checked_write!(self, |tx| {
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO documents (space, kind, name, name_key, position, version,
                             body, created_at_ms, modified_at_ms)
                         VALUES ($1, $2, $3, $4,
                             (SELECT COALESCE(MAX(position), 0) + 1 FROM documents
                              WHERE space = $1 AND kind = $2),
                             1, $5, {NOW}, {NOW})
                         RETURNING {DOCUMENT_COLUMNS}"
                    ),
                    &[&w.space, &w.kind, &w.name.trim(), &key, &body],
                )
                .await?;
            let row = read(&row);
            Self::audit_document(&tx, audit.as_ref(), &row).await?;
            Ok(TxEnd::Commit(row))
        });
        Ok(done)
    }

    pub(in crate::db) async fn get_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
    ) -> Result<Option<DocumentRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE seq = $1 AND space = $2 AND kind = $3"
                ),
                &[&id, &space, &kind],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(read))
    }

    pub(in crate::db) async fn find_document(
        &self,
        space: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<DocumentRow>> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE space = $1 AND kind = $2 AND name_key = $3"
                ),
                &[&space, &kind, &key],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(row.as_ref().map(read))
    }

    pub(in crate::db) async fn list_documents(
        &self,
        space: &str,
        kind: &str,
    ) -> Result<Vec<DocumentRow>> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents
                     WHERE space = $1 AND kind = $2 ORDER BY position, seq"
                ),
                &[&space, &kind],
            )
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(rows.iter().map(read).collect())
    }

    pub(in crate::db) async fn update_document(
        &self,
        id: i64,
        expected: i64,
        w: &DocumentWrite<'_>,
        key: &str,
        body: &str,
        audit: Option<Audit<Document>>,
    ) -> Result<RowWritten> {
        let done = checked_write!(self, |tx| {
            let Some(current) = locked(&tx, w.space, w.kind, id).await? else {
                return Ok(TxEnd::Rollback(RowWritten::NotFound));
            };
            if current.version != expected {
                return Ok(TxEnd::Rollback(RowWritten::Stale {
                    current: current.version,
                }));
            }
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE documents SET name = $2, name_key = $3, body = $4,
                             version = version + 1, modified_at_ms = {NOW}
                         WHERE seq = $1
                         RETURNING {DOCUMENT_COLUMNS}"
                    ),
                    &[&id, &w.name.trim(), &key, &body],
                )
                .await?;
            let row = read(&row);
            Self::audit_document(&tx, audit.as_ref(), &row).await?;
            Ok(TxEnd::Commit(RowWritten::Done(row)))
        });
        Ok(done)
    }

    pub(in crate::db) async fn delete_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
        expected: Option<i64>,
        audit: Option<Audit<()>>,
    ) -> Result<RowWritten> {
        let done = checked_write!(self, |tx| {
            let Some(current) = locked(&tx, space, kind, id).await? else {
                return Ok(TxEnd::Rollback(RowWritten::NotFound));
            };
            if expected.is_some_and(|v| v != current.version) {
                return Ok(TxEnd::Rollback(RowWritten::Stale {
                    current: current.version,
                }));
            }
            tx.execute("DELETE FROM documents WHERE seq = $1", &[&id])
                .await?;
            insert_event(&tx, audit.as_ref(), Some(&())).await?;
            Ok(TxEnd::Commit(RowWritten::Done(current)))
        });
        Ok(done)
    }

    pub(in crate::db) async fn reorder_documents(
        &self,
        space: &str,
        kind: &str,
        ids: &[i64],
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let done = checked_write!(self, |tx| {
            // Every document of the kind, locked: the order is replaced as a whole.
            let all = tx
                .query(
                    "SELECT seq FROM documents WHERE space = $1 AND kind = $2 FOR UPDATE",
                    &[&space, &kind],
                )
                .await?;
            let mut present: Vec<i64> = all.iter().map(|r| r.get(0)).collect();
            present.sort_unstable();
            let mut wanted = ids.to_vec();
            wanted.sort_unstable();
            if present != wanted {
                return Ok(TxEnd::Rollback(false));
            }
            let positions: Vec<i64> = (1..=ids.len() as i64).collect();
            tx.execute(
                "UPDATE documents d SET position = v.position
                 FROM unnest($1::bigint[], $2::bigint[]) AS v(seq, position)
                 WHERE d.seq = v.seq",
                &[&ids, &positions],
            )
            .await?;
            insert_event(&tx, audit.as_ref(), Some(&())).await?;
            Ok(TxEnd::Commit(true))
        });
        Ok(done)
    }
}
