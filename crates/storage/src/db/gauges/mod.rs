//! The cluster's state as `/metrics` shows it: the queue by state and kind, the oldest queued
//! task's age, and the tentacle sessions each gateway holds, read in one statement on the
//! database's clock; one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{TaskState, UnixMs};

use super::{dispatch, Store};
use crate::{Error, Result};

/// How many unfinished tasks share a state and a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    pub state: TaskState,
    pub kind: String,
    pub count: u64,
}

/// What the database says of the cluster at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterGauges {
    /// The database clock.
    pub now_ms: UnixMs,
    /// Queued, executing and cancelling tasks.
    pub tasks: Vec<TaskCount>,
    /// How long the oldest queued task has waited; `None` when nothing is queued.
    pub oldest_queued_ms: Option<i64>,
    /// Live tentacle sessions by the gateway node holding them.
    pub sessions: Vec<(String, u64)>,
}

/// One row of the statement every dialect runs: what it counts, up to two labels, a value.
pub(super) struct GaugeRow {
    pub what: String,
    pub a: Option<String>,
    pub b: Option<String>,
    pub value: Option<i64>,
}

impl ClusterGauges {
    /// Reads the rows; a row this version does not know is an error, never skipped.
    fn from_rows(rows: Vec<GaugeRow>) -> Result<ClusterGauges> {
        let mut g = ClusterGauges::default();
        let mut now = None;
        for r in rows {
            let count = || -> Result<u64> {
                r.value
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| Error::Database(format!("{} row without a count", r.what)))
            };
            match (r.what.as_str(), &r.a, &r.b) {
                ("task", Some(state), Some(kind)) => g.tasks.push(TaskCount {
                    state: state.parse().map_err(|_| {
                        Error::Database(format!("task state {state:?} is not one this node knows"))
                    })?,
                    kind: kind.clone(),
                    count: count()?,
                }),
                ("oldest", None, None) => g.oldest_queued_ms = r.value,
                ("sessions", Some(node), None) => g.sessions.push((node.clone(), count()?)),
                ("now", None, None) => now = r.value,
                (what, a, b) => {
                    return Err(Error::Database(format!(
                        "unexpected gauge row ({what:?}, {a:?}, {b:?})"
                    )))
                }
            }
        }
        g.now_ms = now.ok_or_else(|| Error::Database("gauges without the clock".into()))?;
        g.tasks
            .sort_by(|x, y| (x.state.as_str(), &x.kind).cmp(&(y.state.as_str(), &y.kind)));
        g.sessions.sort();
        Ok(g)
    }
}

impl Store {
    /// The cluster's gauges, in one round trip.
    pub async fn cluster_gauges(&self) -> Result<ClusterGauges> {
        let rows = dispatch!(self, b => b.gauge_rows().await)?;
        ClusterGauges::from_rows(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(what: &str, a: Option<&str>, b: Option<&str>, value: Option<i64>) -> GaugeRow {
        GaugeRow {
            what: what.into(),
            a: a.map(Into::into),
            b: b.map(Into::into),
            value,
        }
    }

    #[test]
    fn rows_become_gauges() {
        let g = ClusterGauges::from_rows(vec![
            row("task", Some("Queued"), Some("Noop"), Some(3)),
            row("oldest", None, None, Some(1500)),
            row("sessions", Some("n1"), None, Some(2)),
            row("now", None, None, Some(99)),
        ])
        .unwrap();
        assert_eq!(g.now_ms, 99);
        assert_eq!(g.oldest_queued_ms, Some(1500));
        assert_eq!(
            g.tasks,
            vec![TaskCount {
                state: TaskState::Queued,
                kind: "Noop".into(),
                count: 3
            }]
        );
        assert_eq!(g.sessions, vec![("n1".to_owned(), 2)]);
    }

    #[test]
    fn an_unknown_state_or_row_is_an_error_not_a_default() {
        let unknown_state = ClusterGauges::from_rows(vec![
            row("task", Some("Paused"), Some("Noop"), Some(1)),
            row("now", None, None, Some(1)),
        ]);
        assert!(unknown_state.unwrap_err().to_string().contains("Paused"));
        let unknown_row = ClusterGauges::from_rows(vec![row("later", None, None, Some(1))]);
        assert!(unknown_row.is_err());
        let no_clock = ClusterGauges::from_rows(vec![]);
        assert!(no_clock.is_err());
    }
}
