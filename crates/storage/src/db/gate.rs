//! Connection checkout shared by the pooled dialects: while the database refuses connections,
//! callers learn why within [`FAIL_FAST`] instead of waiting out the pool's connect timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bb8::{ManageConnection, Pool, PooledConnection, RunError};

use crate::{Error, Result};

/// How long a call waits for a connection while the database is known to refuse them.
pub(super) const FAIL_FAST: Duration = Duration::from_millis(250);

/// Why the last connection attempt failed; `None` once one succeeds. Shared by a pool's
/// manager (which records) and the dialect (which reads).
#[derive(Clone, Default)]
pub(super) struct ConnectFailure(Arc<Mutex<Option<String>>>);

impl ConnectFailure {
    pub(super) fn record(&self, failure: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Takes a connection from `pool`, observing the wait (`cuttle_db_connection_wait_seconds`). A new connection is still attempted in the background each
/// time the database is down, so recovery is noticed at once.
pub(super) async fn checkout<'a, M: ManageConnection>(
    pool: &'a Pool<M>,
    failure: &ConnectFailure,
    target: &str,
    map_err: impl FnOnce(M::Error) -> Error,
) -> Result<PooledConnection<'a, M>> {
    let down = failure.get();
    let wait = if down.is_some() {
        FAIL_FAST
    } else {
        Duration::MAX
    };
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(wait, pool.get()).await;
    cuttle_telemetry::metrics()
        .db_wait
        .observe(started.elapsed().as_secs_f64());
    match got {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(RunError::User(e))) => Err(map_err(e)),
        Ok(Err(RunError::TimedOut)) | Err(_) => Err(Error::Unavailable {
            target: target.to_owned(),
            reason: failure
                .get()
                .or(down)
                .unwrap_or_else(|| "timed out waiting for a connection".into()),
        }),
    }
}

/// A pool's connections now: open, and of those idle.
pub(super) fn pool_state<M: ManageConnection>(pool: &Pool<M>, max: u32) -> crate::PoolState {
    let state = pool.state();
    crate::PoolState {
        open: state.connections,
        idle: state.idle_connections,
        max,
    }
}
