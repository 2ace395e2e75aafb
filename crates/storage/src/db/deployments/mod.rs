//! The deployments area of the [`Store`]: a release going to an environment, written with its
//! Deploy task in one transaction (by the tasks area's enqueue); its state is the task's. One
//! file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{NewTask, TaskId, TaskRecord, TaskState, UnixMs};

use super::{dispatch, Audit, Store};
use crate::{Error, Result};

/// A deployment to record with its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment<'a> {
    /// The space id (`Spaces-1`).
    pub space: &'a str,
    /// The project's document number.
    pub project: i64,
    /// The release's number.
    pub release: i64,
    /// The environment id (`Environments-3`).
    pub environment: &'a str,
    pub created_by: &'a str,
}

/// [`NewDeployment`] owned, for dialects that move it to another thread.
#[derive(Debug, Clone)]
pub(crate) struct OwnedDeployment {
    pub(crate) space: String,
    pub(crate) project: i64,
    pub(crate) release: i64,
    pub(crate) environment: String,
    pub(crate) created_by: String,
}

impl From<&NewDeployment<'_>> for OwnedDeployment {
    fn from(d: &NewDeployment<'_>) -> Self {
        OwnedDeployment {
            space: d.space.to_owned(),
            project: d.project,
            release: d.release,
            environment: d.environment.to_owned(),
            created_by: d.created_by.to_owned(),
        }
    }
}

/// A deployment with its task's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub id: i64,
    pub space: String,
    pub project: i64,
    pub release: i64,
    pub environment: String,
    pub task: TaskId,
    pub state: TaskState,
    pub created_by: String,
    pub created_at: UnixMs,
    pub completed_at: Option<UnixMs>,
}

impl DeploymentRecord {
    /// What retention decides on.
    pub fn facts(&self) -> cuttle_core::retention::DeploymentFacts {
        cuttle_core::retention::DeploymentFacts {
            release: self.release,
            environment: self.environment.clone(),
            task: self.task,
            finished: self.state.is_terminal(),
            succeeded: self.state == TaskState::Success,
        }
    }
}

/// A `deployments` row joined with its task, as stored.
pub(crate) struct DeploymentRow {
    pub(crate) id: i64,
    pub(crate) space: String,
    pub(crate) project: i64,
    pub(crate) release: i64,
    pub(crate) environment: String,
    pub(crate) task: i64,
    pub(crate) state: String,
    pub(crate) created_by: String,
    pub(crate) created_at: UnixMs,
    pub(crate) completed_at: Option<UnixMs>,
}

impl DeploymentRow {
    /// The record, refusing a task state this binary does not know rather than guessing.
    pub(crate) fn parse(self) -> Result<DeploymentRecord> {
        let state = self.state.parse().map_err(|e| {
            Error::Database(format!("deployments row {}: task state: {e}", self.id))
        })?;
        Ok(DeploymentRecord {
            id: self.id,
            space: self.space,
            project: self.project,
            release: self.release,
            environment: self.environment,
            task: TaskId(self.task),
            state,
            created_by: self.created_by,
            created_at: self.created_at,
            completed_at: self.completed_at,
        })
    }
}

/// Which deployments to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentFilter<'a> {
    /// Every deployment of a release.
    Release(i64),
    /// The newest `limit` of a space, optionally of one project, older than `before` when
    /// given (for paging).
    Space {
        space: &'a str,
        project: Option<i64>,
        before: Option<i64>,
        limit: u32,
    },
}

impl Store {
    /// Queues a deployment's task and records the deployment, in one transaction with the
    /// task's audit event. Returns the task and the deployment's number.
    pub async fn enqueue_deployment(
        &self,
        task: &NewTask,
        deployment: &NewDeployment<'_>,
        audit: Option<Audit<TaskRecord>>,
    ) -> Result<(TaskRecord, i64)> {
        let trace = cuttle_telemetry::trace::traceparent();
        let (task, id) =
            dispatch!(self, b => b.enqueue(task, Some(deployment), trace.as_deref(), audit).await)?;
        let id = id.ok_or_else(|| Error::Database("deployment insert returned no row".into()))?;
        Ok((task, id))
    }

    /// Every deployment of a project, newest first, read a page at a time (a project may have
    /// many thousands): what retention decides from.
    pub async fn all_deployments_of(
        &self,
        space: &str,
        project: i64,
    ) -> Result<Vec<DeploymentRecord>> {
        const PAGE: u32 = 1000;
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .list_deployments(DeploymentFilter::Space {
                    space,
                    project: Some(project),
                    before,
                    limit: PAGE,
                })
                .await?;
            let full = page.len() == PAGE as usize;
            before = page.last().map(|d| d.id);
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Deployments with their task's state, newest first.
    pub async fn list_deployments(
        &self,
        filter: DeploymentFilter<'_>,
    ) -> Result<Vec<DeploymentRecord>> {
        dispatch!(self, b => b.list_deployments(filter).await)?
            .into_iter()
            .map(DeploymentRow::parse)
            .collect()
    }

    pub async fn get_deployment(&self, space: &str, id: i64) -> Result<Option<DeploymentRecord>> {
        dispatch!(self, b => b.get_deployment(space, id).await)?
            .map(DeploymentRow::parse)
            .transpose()
    }
}
