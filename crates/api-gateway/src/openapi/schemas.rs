//! The response schemas of the OpenAPI document: derived from the record types the handlers
//! serialize where there is one (`Task`, `Node`, `Target`, `Event`), written here where the
//! handler builds its JSON. Required members are the ones every answer has; more may be added
//! (additions are compatible), so none of them forbids other members.

use cuttle_core::plan::{Process, Step};
use cuttle_core::{EventRecord, NodeRecord, TargetRecord, TaskRecord};
use serde_json::{json, Value};

use super::Gen;

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn nullable_time() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

/// An object with these members, all required.
fn object(members: &[(&str, Value)]) -> Value {
    let required: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
    let properties: serde_json::Map<String, Value> = members
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    json!({"type": "object", "required": required, "properties": properties})
}

/// `T`'s schema written out whole (for a parameter).
pub(crate) fn inline<T: schemars::JsonSchema>() -> Value {
    let mut v = super::settings()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .root_schema_for::<T>()
        .to_value();
    if let Value::Object(m) = &mut v {
        m.remove("title");
    }
    v
}

/// A time in a query: a day or an instant, UTC.
pub(crate) fn time_param() -> Value {
    json!({"type": "string", "examples": ["2026-12-01", "2026-12-01T10:00:00Z"]})
}

/// A list's `limit`.
pub(crate) fn limit() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 1000})
}

/// `{"error": {"code", "message"}}`, every failure's body.
pub(crate) fn error(g: &mut Gen) -> Value {
    g.named("Error", |_| {
        object(&[(
            "error",
            object(&[
                (
                    "code",
                    json!({"type": "string", "description": "stable: `bad_request`, `not_found`, `conflict`, …"}),
                ),
                ("message", string()),
            ]),
        )])
    })
}

/// `{"items": [item…], "next"?}`: every list.
pub(crate) fn page(item: Value) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next": {"type": "string", "description": "present when more may follow: pass it back as `before`"},
        },
    })
}

pub(crate) fn node(g: &mut Gen) -> Value {
    g.record::<NodeRecord>("Node")
}

pub(crate) fn nodes(g: &mut Gen) -> Value {
    page(node(g))
}

pub(crate) fn task(g: &mut Gen) -> Value {
    g.record::<TaskRecord>("Task")
}

pub(crate) fn tasks(g: &mut Gen) -> Value {
    page(task(g))
}

pub(crate) fn target(g: &mut Gen) -> Value {
    g.record::<TargetRecord>("Target")
}

pub(crate) fn targets(g: &mut Gen) -> Value {
    page(target(g))
}

pub(crate) fn event(g: &mut Gen) -> Value {
    g.record::<EventRecord>("Event")
}

pub(crate) fn events(g: &mut Gen) -> Value {
    page(event(g))
}

fn links_raw() -> Value {
    object(&[("raw", string())])
}

pub(crate) fn artifacts(g: &mut Gen) -> Value {
    let artifact = g.named("Artifact", |_| {
        object(&[
            ("id", string()),
            ("name", string()),
            ("source", string()),
            ("size", integer()),
            ("created_at", time()),
            ("links", links_raw()),
        ])
    });
    page(artifact)
}

fn key_members() -> Vec<(&'static str, Value)> {
    let names = json!({"type": ["array", "null"], "items": {"type": "string"}});
    vec![
        ("id", string()),
        ("name", string()),
        ("scope", inline::<cuttle_core::Scope>()),
        ("prefix", string()),
        ("target", nullable_string()),
        ("environments", names.clone()),
        ("roles", names),
        ("reusable", json!({"type": ["boolean", "null"]})),
        ("created_at", time()),
        ("expires_at", nullable_time()),
        ("expired", json!({"type": "boolean"})),
    ]
}

pub(crate) fn keys(g: &mut Gen) -> Value {
    page(g.named("ApiKey", |_| object(&key_members())))
}

/// A new key's record, with the key itself (sent this once).
pub(crate) fn new_key(g: &mut Gen) -> Value {
    g.named("NewApiKey", |_| {
        let mut members = key_members();
        members.push(("key", string()));
        object(&members)
    })
}

pub(crate) fn package(g: &mut Gen) -> Value {
    g.named("Package", |_| {
        object(&[
            ("id", string()),
            ("space_id", string()),
            ("package_id", string()),
            ("version", string()),
            (
                "format",
                json!({"enum": ["zip", "tar.gz", "tgz", "tar", "nupkg"]}),
            ),
            ("size", integer()),
            (
                "sha256",
                json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
            ),
            ("uploaded_by", string()),
            ("uploaded_at", time()),
            ("links", links_raw()),
        ])
    })
}

pub(crate) fn packages(g: &mut Gen) -> Value {
    let mut p = page(package(g));
    p["required"] = json!(["items", "total"]);
    p["properties"]["total"] = integer();
    p["properties"]["next"] = json!({
        "type": "string",
        "pattern": "^[0-9]+$",
        "description": "the `skip` of the next page (a number, written as a string)",
    });
    p
}

fn variables_shown() -> Value {
    json!({"type": "array", "items": object(&[
        ("id", string()),
        ("name", string()),
        ("value", json!({"type": ["string", "null"], "description": "null when sensitive"})),
        ("scope", json!({"type": "object"})),
        ("sensitive", json!({"type": "boolean"})),
    ])})
}

pub(crate) fn variables(g: &mut Gen) -> Value {
    g.named("ProjectVariables", |_| {
        object(&[
            ("project_id", string()),
            ("version", integer()),
            ("variables", variables_shown()),
        ])
    })
}

fn steps(g: &mut Gen) -> Value {
    // As written: what is shown is what was written, with its defaults filled in.
    let step = g.request::<Step>();
    json!({"type": "array", "items": step})
}

/// A project's deployment process or a runbook's (`owner`: `project_id` or `runbook_id`).
pub(crate) fn project_process(g: &mut Gen) -> Value {
    g.named("DeploymentProcess", |g| {
        object(&[
            ("project_id", string()),
            ("version", integer()),
            ("steps", steps(g)),
        ])
    })
}

pub(crate) fn runbook_process(g: &mut Gen) -> Value {
    g.named("RunbookProcess", |g| {
        object(&[
            ("runbook_id", string()),
            ("version", integer()),
            ("steps", steps(g)),
        ])
    })
}

fn release_members() -> Vec<(&'static str, Value)> {
    vec![
        ("id", string()),
        ("project_id", string()),
        ("space_id", string()),
        ("version", string()),
        ("notes", string()),
        ("created_by", string()),
        ("created_at", time()),
        (
            "packages",
            json!({"type": "object", "additionalProperties": object(&[
                ("package_id", string()),
                ("version", string()),
                ("sha256", string()),
            ])}),
        ),
    ]
}

pub(crate) fn release(g: &mut Gen) -> Value {
    g.named("Release", |g| {
        let process = g.request::<Process>();
        let mut members = release_members();
        members.push(("process", process));
        members.push(("variables", variables_shown()));
        object(&members)
    })
}

pub(crate) fn releases(g: &mut Gen) -> Value {
    page(g.named("ReleaseSummary", |_| object(&release_members())))
}

fn deployment_members() -> Vec<(&'static str, Value)> {
    vec![
        ("id", string()),
        ("space_id", string()),
        ("project_id", string()),
        ("release_id", string()),
        ("environment_id", string()),
        ("task_id", string()),
        ("state", inline::<cuttle_core::TaskState>()),
        ("created_by", string()),
        ("created_at", time()),
        ("completed_at", nullable_time()),
    ]
}

pub(crate) fn deployment(g: &mut Gen) -> Value {
    g.named("Deployment", |_| object(&deployment_members()))
}

pub(crate) fn deployments(g: &mut Gen) -> Value {
    page(deployment(g))
}

pub(crate) fn dashboard(g: &mut Gen) -> Value {
    g.named("Dashboard", |_| {
        let named =
            json!({"type": "array", "items": object(&[("id", string()), ("name", string())])});
        let mut cell = deployment_members();
        cell.push(("release_version", nullable_string()));
        object(&[
            ("projects", named.clone()),
            ("environments", named),
            ("items", json!({"type": "array", "items": object(&cell)})),
        ])
    })
}

/// The ping's answer (`200` online, `418` draining, `503` unavailable with `error`).
pub(crate) fn ping(g: &mut Gen) -> Value {
    g.named("Ping", |_| {
        let mut v = object(&[
            ("node", string()),
            (
                "state",
                json!({"enum": ["online", "draining", "unavailable"]}),
            ),
        ]);
        v["properties"]["error"] = json!({"type": "object"});
        v
    })
}

pub(crate) fn identity(g: &mut Gen) -> Value {
    g.named("ClusterIdentity", |_| {
        let mut v = object(&[("thumbprint", string())]);
        v["properties"]["gateways"] = json!({"type": "array", "items": {"type": "string"}});
        v
    })
}

/// The OpenAPI document itself.
pub(crate) fn openapi(_: &mut Gen) -> Value {
    json!({"type": "object", "required": ["openapi", "paths"]})
}

/// A write's body with the version it was read at (`version`, or `If-Match`).
pub(crate) fn with_version(mut schema: Value) -> Value {
    schema["properties"]["version"] = json!({
        "type": ["integer", "null"],
        "description": "the version the document was read at (or `If-Match`)",
    });
    if let Value::Object(m) = &mut schema {
        m.remove("title");
    }
    schema
}

/// A process as written: its steps, at the version read.
pub(crate) fn process_write(g: &mut Gen) -> Value {
    let step = g.request::<Step>();
    with_version(json!({
        "type": "object",
        "required": ["steps"],
        "additionalProperties": false,
        "properties": {"steps": {"type": "array", "items": step}},
    }))
}

/// A configuration document as shown: the members its write takes (`write`'s properties, none
/// of them required but `name`), `id`, `space_id`, `version`, `created_at`, `modified_at`, and
/// the `extra` members it always shows.
pub(crate) fn document(write: &Value, extra: &[(&str, Value)]) -> Value {
    let mut v = object(&[
        ("id", string()),
        ("name", string()),
        ("version", integer()),
        ("created_at", time()),
        ("modified_at", time()),
    ]);
    if let Some(props) = write.get("properties").and_then(Value::as_object) {
        for (name, schema) in props {
            if !v["properties"]
                .as_object()
                .is_some_and(|p| p.contains_key(name))
            {
                v["properties"][name] = schema.clone();
            }
        }
    }
    v["properties"]["space_id"] = string();
    // What the resource shows besides, always.
    for (name, schema) in extra {
        v["properties"][*name] = schema.clone();
        if let Some(required) = v["required"].as_array_mut() {
            required.push(json!(name));
        }
    }
    v
}
