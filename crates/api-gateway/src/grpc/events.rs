//! `cuttle.v1.Events`: the audit events, through what REST's `/api/events` reads; `Export`
//! streams the same JSON lines REST's export sends, each as an `Event`.

use std::pin::Pin;

use cuttle_core::EventRecord;
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::events_server::{Events as Service, EventsServer};
use futures_util::Stream;
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::convert::{status, text, timestamp, to_struct};
use crate::extract::limit_or_default;
use crate::resources::events::export_lines;
use crate::scoped::{Need, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Events";

pub(super) const NEEDS: &[(&str, Need)] = &[("List", READER), ("Export", READER)];

pub(super) fn server(s: AppState) -> EventsServer<EventsApi> {
    EventsServer::new(EventsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct EventsApi {
    s: AppState,
}

fn event(e: &EventRecord) -> pb::Event {
    pb::Event {
        id: e.id.clone(),
        occurred_at: Some(timestamp(e.occurred_at)),
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        client_address: e.client_address.clone(),
        details: Some(to_struct(&e.details)),
    }
}

/// An exported line (the JSON REST's export sends) as an `Event`; a line that is not one is an
/// error, never an empty event.
fn exported(line: &[u8]) -> Result<pb::Event, Status> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| Status::internal(format!("an exported event cannot be read: {e}")))?;
    let at = cuttle_core::parse_time(v["occurred_at"].as_str().unwrap_or_default())
        .map_err(|e| Status::internal(format!("an exported event's time: {}", e.0)))?;
    Ok(pb::Event {
        id: text(&v, "id"),
        occurred_at: Some(timestamp(at)),
        actor: text(&v, "actor"),
        action: text(&v, "action"),
        target: text(&v, "target"),
        client_address: text(&v, "client_address"),
        details: Some(to_struct(&v["details"])),
    })
}

fn ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Service for EventsApi {
    async fn list(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsReply>, Status> {
        let limit = limit_or_default(req.get_ref().limit).map_err(status)?;
        let events = self
            .s
            .store
            .list_events(limit)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListEventsReply {
            items: events.iter().map(event).collect(),
        }))
    }

    type ExportStream = EventStream;

    async fn export(
        &self,
        req: Request<pb::ExportEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let from = r.since.as_ref().map_or(0, ms);
        let to = r.until.as_ref().map(ms);
        let rx = export_lines(&self.s, from, to).await.map_err(status)?;
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            let item = match line {
                Ok(l) => exported(&l),
                Err(e) => Err(Status::unavailable(format!("the export stopped: {e}"))),
            };
            Some((item, rx))
        });
        Ok(Response::new(Box::pin(events)))
    }
}
