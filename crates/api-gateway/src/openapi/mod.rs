//! The REST API's OpenAPI 3.1 document, served at `/api/openapi.json` without a key.
//!
//! Built from the routes themselves: every route is declared in [`crate::scoped::Api`] with its
//! scope and its [`Op`] (what it takes and what it answers), so a route cannot exist without its
//! entry. Request bodies' schemas are derived (schemars) from the types the handlers parse,
//! records' from the types they serialize where there is one, and written in [`schemas`] where
//! the handler builds its JSON; the schemathesis run in CI checks every answer against them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::scoped::{Declared, Need};

pub(crate) mod schemas;

/// Makes a schema (a `$ref` for a named one, which it registers in the components).
pub(crate) type SchemaFn = fn(&mut Gen) -> Value;

/// Where the document's schemas are made and named.
pub(crate) struct Gen {
    requests: SchemaGenerator,
    named: BTreeMap<String, Value>,
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

impl Gen {
    fn new() -> Gen {
        Gen {
            requests: settings().for_deserialize().into_generator(),
            named: BTreeMap::new(),
        }
    }

    /// What `T`'s `Deserialize` accepts: a request body or a part of one.
    pub(crate) fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// The definition of `T`'s request schema itself (not a `$ref` to it): for schemas made
    /// from it.
    pub(crate) fn request_definition<T: JsonSchema>(&mut self) -> Value {
        let schema = self.request::<T>();
        match schema.get("$ref") {
            None => schema,
            Some(_) => self
                .requests
                .definitions()
                .get(T::schema_name().as_ref())
                .cloned()
                .unwrap_or_else(|| panic!("{} has no definition", T::schema_name())),
        }
    }

    /// A record as `T`'s `Serialize` writes it, named `name` in the components.
    pub(crate) fn record<T: JsonSchema>(&mut self, name: &str) -> Value {
        self.named(name, |_| {
            let mut generator = settings()
                .for_serialize()
                .with(|s| s.inline_subschemas = true)
                .into_generator();
            let mut v = generator.root_schema_for::<T>().to_value();
            if let Value::Object(m) = &mut v {
                m.remove("$schema");
            }
            v
        })
    }

    /// A schema written by hand, named `name` in the components (made once).
    pub(crate) fn named(&mut self, name: &str, make: impl FnOnce(&mut Gen) -> Value) -> Value {
        if !self.named.contains_key(name) {
            // Taken before it is made, so a schema that refers to itself ends.
            self.named.insert(name.to_owned(), Value::Null);
            let schema = make(self);
            self.named.insert(name.to_owned(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn into_components(mut self) -> Map<String, Value> {
        let mut out: Map<String, Value> =
            self.requests.take_definitions(true).into_iter().collect();
        for (name, schema) in self.named {
            let previous = out.insert(name.clone(), schema);
            assert!(previous.is_none(), "schema {name} named twice");
        }
        out
    }
}

/// A parameter in the query string or a header.
struct Param {
    name: &'static str,
    place: &'static str,
    schema: Value,
    required: bool,
    what: Cow<'static, str>,
}

/// What a successful answer carries.
#[derive(Clone, Copy)]
pub(crate) enum Content {
    /// No body (`204`, `304`).
    Empty,
    Json(SchemaFn),
    /// `text/plain`, streamed.
    Text,
    /// A file, streamed, as one of these media types.
    File(&'static [&'static str]),
    /// JSON lines (`application/x-ndjson`).
    JsonLines,
    /// Prometheus' text format.
    Prometheus,
}

struct Reply {
    status: u16,
    what: Cow<'static, str>,
    content: Content,
    headers: &'static [(&'static str, &'static str)],
}

/// A follow-up operation the answer's values feed (OpenAPI links: the stateful tests follow
/// them, and a client generator can too).
struct Link {
    name: &'static str,
    operation: Cow<'static, str>,
    parameters: Vec<(&'static str, &'static str)>,
}

enum Body {
    Json(SchemaFn),
    /// A package: `multipart/form-data` with one file part, or the raw bytes.
    Package,
}

/// One route's description: its operation id, what it does, what it takes, what it answers
/// and which refusals it has beyond the ones every route has.
pub(crate) struct Op {
    id: Cow<'static, str>,
    summary: Cow<'static, str>,
    params: Vec<Param>,
    body: Option<Body>,
    replies: Vec<Reply>,
    refusals: Vec<(u16, &'static str)>,
    links: Vec<Link>,
}

impl Op {
    pub(crate) fn new(
        id: impl Into<Cow<'static, str>>,
        summary: impl Into<Cow<'static, str>>,
    ) -> Op {
        Op {
            id: id.into(),
            summary: summary.into(),
            params: Vec::new(),
            body: None,
            replies: Vec::new(),
            refusals: Vec::new(),
            links: Vec::new(),
        }
    }

    /// An optional query parameter.
    pub(crate) fn query(mut self, name: &'static str, schema: Value, what: &'static str) -> Op {
        self.params.push(Param {
            name,
            place: "query",
            schema,
            required: false,
            what: what.into(),
        });
        self
    }

    /// An optional request header.
    pub(crate) fn header(mut self, name: &'static str, schema: Value, what: &'static str) -> Op {
        self.params.push(Param {
            name,
            place: "header",
            schema,
            required: false,
            what: what.into(),
        });
        self
    }

    /// A JSON body (required).
    pub(crate) fn body(mut self, schema: SchemaFn) -> Op {
        self.body = Some(Body::Json(schema));
        self
    }

    /// A package upload's body.
    pub(crate) fn package_body(mut self) -> Op {
        self.body = Some(Body::Package);
        self
    }

    /// A successful answer.
    pub(crate) fn reply(
        mut self,
        status: u16,
        what: impl Into<Cow<'static, str>>,
        content: Content,
    ) -> Op {
        self.replies.push(Reply {
            status,
            what: what.into(),
            content,
            headers: &[],
        });
        self
    }

    /// `200` with JSON.
    pub(crate) fn ok(self, what: impl Into<Cow<'static, str>>, schema: SchemaFn) -> Op {
        self.reply(200, what, Content::Json(schema))
    }

    /// `201` with JSON.
    pub(crate) fn created(self, what: impl Into<Cow<'static, str>>, schema: SchemaFn) -> Op {
        self.reply(201, what, Content::Json(schema))
    }

    /// `204`, nothing in the body.
    pub(crate) fn no_content(self, what: &'static str) -> Op {
        self.reply(204, what, Content::Empty)
    }

    /// Headers the last reply carries (name, what it says).
    pub(crate) fn with_headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Op {
        if let Some(r) = self.replies.last_mut() {
            r.headers = headers;
        }
        self
    }

    /// A refusal this route has beyond the ones every route has (`409` and the like).
    pub(crate) fn refuses(mut self, status: u16, when: &'static str) -> Op {
        self.refusals.push((status, when));
        self
    }

    /// The first reply's values feed `operation`: each parameter named from a runtime
    /// expression (`$response.body#/id`, `$request.path.space`).
    pub(crate) fn link(
        mut self,
        name: &'static str,
        operation: impl Into<Cow<'static, str>>,
        parameters: &[(&'static str, &'static str)],
    ) -> Op {
        self.links.push(Link {
            name,
            operation: operation.into(),
            parameters: parameters.to_vec(),
        });
        self
    }
}

/// A file served by range (`resources::files::serve`) as one of `types`: whole, one range, or
/// not modified.
pub(crate) fn file_download(
    id: &'static str,
    summary: &'static str,
    types: &'static [&'static str],
) -> Op {
    let any = json!({"type": "string"});
    Op::new(id, summary)
        .header("Range", any.clone(), "one byte range (`bytes=0-1023`)")
        .header(
            "If-Range",
            any.clone(),
            "the `ETag` held: the range applies only to that copy",
        )
        .header(
            "If-None-Match",
            any,
            "the `ETag` held: `304` when it is this one",
        )
        .reply(200, "the whole file", Content::File(types))
        .with_headers(&[
            ("ETag", "the file's entity tag"),
            ("Content-Length", "its size"),
        ])
        .reply(206, "the range asked for", Content::File(types))
        .with_headers(&[("Content-Range", "`bytes first-last/size`")])
        .reply(304, "the client's copy is this one", Content::Empty)
        .reply(
            416,
            "the range starts beyond the file's end",
            Content::Empty,
        )
        .with_headers(&[("Content-Range", "`bytes */size`")])
}

/// The `{name}`s of a path pattern (`{*tail}` as `tail`).
pub(crate) fn path_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(n, _)| n.trim_start_matches('*')))
        .collect()
}

fn path_param_what(name: &str) -> &'static str {
    match name {
        "space" => "the space: its id (`Spaces-1`) or its name, whatever its case",
        "name" => "the node's name",
        "package_id" => "the package id (`Shop.Web`)",
        "version" => "the package version (SemVer)",
        "artifact" => "the artifact's id as its `links.raw` gives it (percent-encoded)",
        _ => "the id, as the resource shows it (`Environments-3`, `ServerTasks-12`)",
    }
}

fn error_response(g: &mut Gen, status: u16, what: &str) -> Value {
    let mut out = json!({
        "description": what,
        "content": {"application/json": {"schema": schemas::error(g)}},
    });
    if status == 429 || status == 503 {
        out["headers"] = json!({"Retry-After": {
            "description": "seconds to wait before trying again, when the node knows",
            "schema": {"type": "string"},
        }});
    }
    out
}

fn content(g: &mut Gen, c: Content) -> Option<Value> {
    let (media, schema) = match c {
        Content::Empty => return None,
        Content::Json(f) => ("application/json", f(g)),
        Content::Text => ("text/plain", json!({"type": "string"})),
        Content::File(types) => {
            let mut out = Map::new();
            for t in types {
                out.insert(
                    (*t).to_owned(),
                    json!({"schema": {"type": "string", "contentMediaType": t}}),
                );
            }
            return Some(Value::Object(out));
        }
        Content::JsonLines => (
            "application/x-ndjson",
            json!({"type": "string", "description": "one audit event (JSON) per line"}),
        ),
        Content::Prometheus => ("text/plain", json!({"type": "string"})),
    };
    Some(json!({ media: {"schema": schema} }))
}

fn operation(g: &mut Gen, d: &Declared) -> Value {
    let op = &d.op;
    let mut parameters: Vec<Value> = path_params(d.path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name, "in": "path", "required": true,
                "description": path_param_what(name),
                "schema": {"type": "string", "minLength": 1},
            })
        })
        .collect();
    for p in &op.params {
        parameters.push(json!({
            "name": p.name, "in": p.place, "required": p.required,
            "description": p.what, "schema": p.schema,
        }));
    }
    let mut responses = Map::new();
    let takes_input = !parameters.is_empty() || op.body.is_some();
    let mut refusals: Vec<(u16, Cow<'static, str>)> = Vec::new();
    if takes_input {
        refusals.push((
            400,
            "malformed: a parameter or body the route does not take, or a value out of range"
                .into(),
        ));
    }
    if let Some(Need {
        scope,
        register_target,
    }) = d.need
    {
        refusals.push((
            401,
            "no API key, an unknown one, or one past its expiry".into(),
        ));
        let why = if register_target {
            format!("the key is neither `{scope}` (or above) nor the `register-target` key of this target")
        } else {
            format!("the key's scope is below `{scope}`")
        };
        refusals.push((403, why.into()));
        refusals.push((
            429,
            "ten unknown API keys from this client within a minute: wait `Retry-After` seconds"
                .into(),
        ));
    }
    if !path_params(d.path).is_empty() {
        refusals.push((404, "no such id".into()));
    }
    // Every keyed route reads its body (if any) within the body deadline, and every route
    // refuses a declared body over the limit before reading it.
    if d.need.is_some() {
        refusals.push((408, "the body did not arrive in time".into()));
    }
    refusals.push((413, "the body is over the limit".into()));
    refusals.push((
        503,
        "the database or the shared store cannot be reached; try again".into(),
    ));
    // A refusal the route names itself says more than the general one.
    refusals.extend(op.refusals.iter().map(|(s, w)| (*s, Cow::Borrowed(*w))));
    for (status, why) in refusals {
        responses.insert(status.to_string(), error_response(g, status, &why));
    }
    // And what it answers when it does what it says replaces both (the ping's `503`).
    for (i, r) in op.replies.iter().enumerate() {
        let mut reply = json!({"description": r.what});
        if let Some(c) = content(g, r.content) {
            reply["content"] = c;
        }
        if !r.headers.is_empty() {
            let headers: Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, what)| {
                    (
                        (*n).to_owned(),
                        json!({"description": what, "schema": {"type": "string"}}),
                    )
                })
                .collect();
            reply["headers"] = Value::Object(headers);
        }
        if i == 0 && !op.links.is_empty() {
            let links: Map<String, Value> = op
                .links
                .iter()
                .map(|l| {
                    let params: Map<String, Value> = l
                        .parameters
                        .iter()
                        .map(|(n, e)| ((*n).to_owned(), json!(e)))
                        .collect();
                    (
                        l.name.to_owned(),
                        json!({"operationId": l.operation, "parameters": params}),
                    )
                })
                .collect();
            reply["links"] = Value::Object(links);
        }
        responses.insert(r.status.to_string(), reply);
    }
    let mut out = json!({
        "operationId": op.id,
        "summary": op.summary,
        "parameters": parameters,
        "responses": responses,
    });
    match d.need {
        None => out["security"] = json!([]),
        Some(Need {
            scope,
            register_target,
        }) => {
            out["x-cuttle-scope"] = json!(scope.to_string());
            if register_target {
                out["x-cuttle-register-target"] = json!(true);
            }
        }
    }
    match &op.body {
        None => {}
        Some(Body::Json(f)) => {
            out["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": f(g)}},
            });
        }
        Some(Body::Package) => {
            out["requestBody"] = json!({
                "required": true,
                "content": {
                    "multipart/form-data": {"schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"}},
                        "description": "one file part named `PackageId.Version.ext`",
                    }},
                    "application/octet-stream": {"schema": {
                        "type": "string", "contentMediaType": "application/octet-stream",
                        "description": "the package itself, with `package_id`, `version` and `format` in the query",
                    }},
                },
            });
        }
    }
    out
}

/// The OpenAPI document of these routes.
pub(crate) fn document(routes: &[&Declared]) -> Value {
    let mut g = Gen::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for d in routes {
        let path = d.path.replace("{*", "{");
        let method = d.method.as_str().to_ascii_lowercase();
        let op = operation(&mut g, d);
        let previous = paths.entry(path).or_default().insert(method, op);
        assert!(
            previous.is_none(),
            "{} {} described twice",
            d.method,
            d.path
        );
    }
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(p, ops)| (p, Value::Object(ops)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cuttle REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Deployment orchestration. Every route but the ping, the cluster's \
                identity and this document takes an API key (`X-API-Key: API-…` or \
                `Authorization: Bearer API-…`); `x-cuttle-scope` names the scope each needs. \
                The readable reference is docs/api.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "schemas": g.into_components(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::routes::{described, keyed_routes, open_routes};

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Every route the router has is in the document, with its method; nothing else is; every
    /// operation id is unique, every link names one, every `$ref` resolves.
    #[test]
    fn the_document_describes_every_route() {
        let doc = described();
        if let Ok(path) = std::env::var("CUTTLE_WRITE_OPENAPI") {
            std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        }
        let (_, needs) = keyed_routes();
        let (_, open) = open_routes().into_parts();
        let routes: BTreeSet<(String, String)> = needs
            .declared()
            .iter()
            .chain(&open)
            .map(|d| (d.path.replace("{*", "{"), d.method.as_str().to_lowercase()))
            .collect();
        let mut described_routes = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut links = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                described_routes.insert((path.clone(), method.clone()));
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "operation id {id} twice");
                for reply in op["responses"].as_object().unwrap().values() {
                    if let Some(l) = reply.get("links").and_then(Value::as_object) {
                        links.extend(
                            l.values()
                                .map(|l| l["operationId"].as_str().unwrap().to_owned()),
                        );
                    }
                }
                let params = op["parameters"].as_array().unwrap();
                for name in super::path_params(path) {
                    assert!(
                        params
                            .iter()
                            .any(|p| p["in"] == "path" && p["name"] == name),
                        "{method} {path}: no parameter {name}"
                    );
                }
            }
        }
        assert_eq!(routes, described_routes);
        assert!(routes.len() > 60, "only {} routes", routes.len());
        for l in links {
            assert!(ids.contains(&l), "a link names {l}, which no operation is");
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} points elsewhere"));
            assert!(
                schemas.get(name).is_some_and(|s| !s.is_null()),
                "{r} resolves to nothing"
            );
        }
    }

    /// docs/api.md, the readable reference, and the document name the same routes: every
    /// `` `METHOD /path` `` it writes (a query string aside) is an operation, and every
    /// operation is written there.
    #[test]
    fn the_reference_and_the_document_name_the_same_routes() {
        let reference = include_str!("../../../../docs/api.md");
        // The web UI's pages (`/ui/…`) are HTML, not the REST API.
        let mut written = BTreeSet::new();
        for quoted in reference.split('`').skip(1).step_by(2) {
            let Some((method, path)) = quoted.split_once(' ') else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method)
                || !(path.starts_with("/api/") || path == "/metrics")
                || path.contains('…')
            {
                continue;
            }
            let path = path.split('?').next().unwrap_or(path);
            written.insert((method.to_lowercase(), path.to_owned()));
        }
        let doc = described();
        let mut described_routes = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                described_routes.insert((method.clone(), path.clone()));
            }
        }
        let only_written: Vec<_> = written.difference(&described_routes).collect();
        let only_described: Vec<_> = described_routes.difference(&written).collect();
        assert!(
            only_written.is_empty() && only_described.is_empty(),
            "docs/api.md names {only_written:?}, which the API does not have; it never names \
             {only_described:?}"
        );
    }
}
