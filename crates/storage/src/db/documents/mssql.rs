//! The documents area in SQL Server.

use tiberius::error::Error as TdsError;
use tiberius::Row;

use super::super::mssql::{
    batch, execute, insert_event, int64, ms, rows, run, run_in_transaction, text, MsConn, Mssql,
    Retry,
};
use super::{Document, DocumentRow, DocumentWrite, RowWritten};
use crate::db::Audit;
use crate::Result;

/// The document columns in the order [`read`] takes them, times in milliseconds.
macro_rules! document_columns {
    () => {
        concat!(
            "seq, space, kind, name, position, version, body, ",
            ms!("created_at"),
            ", ",
            ms!("modified_at")
        )
    };
}

fn read(r: &Row) -> DocumentRow {
    DocumentRow {
        id: int64(r, 0),
        space: text(r, 1),
        kind: text(r, 2),
        name: text(r, 3),
        position: int64(r, 4),
        version: int64(r, 5),
        body: text(r, 6),
        created_at: int64(r, 7),
        modified_at: int64(r, 8),
    }
}

const BY_ID: &str = concat!(
    "SELECT ",
    document_columns!(),
    " FROM documents WHERE seq = @P1"
);

/// The version of a document of this space and kind, locked until the transaction ends.
const LOCK_VERSION: &str = "SELECT version FROM documents WITH (UPDLOCK, HOLDLOCK)
     WHERE seq = @P1 AND space = @P2 AND kind = @P3";

async fn by_id(c: &mut MsConn, id: i64) -> std::result::Result<Option<DocumentRow>, TdsError> {
    Ok(rows(c, BY_ID, &[&id]).await?.first().map(read))
}

impl Mssql {
    pub(in crate::db) async fn create_document(
        &self,
        w: &DocumentWrite<'_>,
        key: &str,
        body: &str,
        audit: Option<Audit<Document>>,
    ) -> Result<DocumentRow> {
        let name = w.name.trim();
        let row = run_in_transaction!(self, |c| {
            let made = rows(
                c,
                "INSERT INTO documents (space, kind, name, name_key, position, version, body,
                     created_at, modified_at)
                 OUTPUT inserted.seq
                 SELECT @P1, @P2, @P3, @P4, COALESCE(MAX(position), 0) + 1, 1, @P5,
                     SYSUTCDATETIME(), SYSUTCDATETIME()
                 FROM documents WITH (UPDLOCK, HOLDLOCK) WHERE space = @P1 AND kind = @P2",
                &[&w.space, &w.kind, &name, &key, &body],
            )
            .await?;
            let id = made.first().map(|r| int64(r, 0)).unwrap_or_default();
            let row = by_id(c, id).await?;
            if let Some(row) = &row {
                insert_event(c, audit.as_ref(), Some(&row.with_body(w.body))).await?;
            }
            row
        })?;
        self.committed();
        row.ok_or_else(|| crate::Error::Database("insert returned no row".into()))
    }

    pub(in crate::db) async fn get_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
    ) -> Result<Option<DocumentRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE seq = @P1 AND space = @P2 AND kind = @P3"
        );
        let found = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&id, &space, &kind]).await
        })?;
        Ok(found.first().map(read))
    }

    pub(in crate::db) async fn find_document(
        &self,
        space: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<DocumentRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE space = @P1 AND kind = @P2 AND name_key = @P3"
        );
        let found = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&space, &kind, &key]).await
        })?;
        Ok(found.first().map(read))
    }

    pub(in crate::db) async fn list_documents(
        &self,
        space: &str,
        kind: &str,
    ) -> Result<Vec<DocumentRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE space = @P1 AND kind = @P2 ORDER BY position, seq"
        );
        let found = run!(self, Retry::Idempotent, |c| {
            rows(c, SQL, &[&space, &kind]).await
        })?;
        Ok(found.iter().map(read).collect())
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
        let name = w.name.trim();
        let outcome = run_in_transaction!(self, |c| {
            let found = rows(c, LOCK_VERSION, &[&id, &w.space, &w.kind]).await?;
            match found.first().map(|r| int64(r, 0)) {
                None => RowWritten::NotFound,
                Some(v) if v != expected => RowWritten::Stale { current: v },
                Some(_) => {
                    execute(
                        c,
                        "UPDATE documents SET name = @P2, name_key = @P3, body = @P4,
                             version = version + 1, modified_at = SYSUTCDATETIME()
                         WHERE seq = @P1",
                        &[&id, &name, &key, &body],
                    )
                    .await?;
                    match by_id(c, id).await? {
                        Some(row) => {
                            insert_event(c, audit.as_ref(), Some(&row.with_body(w.body))).await?;
                            RowWritten::Done(row)
                        }
                        None => RowWritten::NotFound,
                    }
                }
            }
        })?;
        if matches!(outcome, RowWritten::Done(_)) {
            self.committed();
        }
        Ok(outcome)
    }

    pub(in crate::db) async fn delete_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
        expected: Option<i64>,
        audit: Option<Audit<()>>,
    ) -> Result<RowWritten> {
        let outcome = run_in_transaction!(self, |c| {
            let found = rows(c, LOCK_VERSION, &[&id, &space, &kind]).await?;
            match found.first().map(|r| int64(r, 0)) {
                None => RowWritten::NotFound,
                Some(v) if expected.is_some_and(|e| e != v) => RowWritten::Stale { current: v },
                Some(_) => match by_id(c, id).await? {
                    Some(row) => {
                        execute(c, "DELETE FROM documents WHERE seq = @P1", &[&id]).await?;
                        insert_event(c, audit.as_ref(), Some(&())).await?;
                        RowWritten::Done(row)
                    }
                    None => RowWritten::NotFound,
                },
            }
        })?;
        if matches!(outcome, RowWritten::Done(_)) {
            self.committed();
        }
        Ok(outcome)
    }

    pub(in crate::db) async fn reorder_documents(
        &self,
        space: &str,
        kind: &str,
        ids: &[i64],
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        // The ids are numbers this process parsed: safe to write into the statement.
        let values: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| format!("({id}, {})", i + 1))
            .collect();
        let update = format!(
            "UPDATE documents SET position = v.position
             FROM (VALUES {}) AS v(seq, position) WHERE documents.seq = v.seq",
            values.join(", ")
        );
        let done = run_in_transaction!(self, |c| {
            let all = rows(
                c,
                "SELECT seq FROM documents WITH (UPDLOCK, HOLDLOCK) WHERE space = @P1 AND kind = @P2",
                &[&space, &kind],
            )
            .await?;
            let mut present: Vec<i64> = all.iter().map(|r| int64(r, 0)).collect();
            present.sort_unstable();
            let mut wanted = ids.to_vec();
            wanted.sort_unstable();
            if present == wanted {
                if !ids.is_empty() {
                    batch(c, &update).await?;
                }
                insert_event(c, audit.as_ref(), Some(&())).await?;
                true
            } else {
                false
            }
        })?;
        if done {
            self.committed();
        }
        Ok(done)
    }
}
