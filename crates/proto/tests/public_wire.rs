//! The public API's wire rules, checked: within `cuttle.v1` nothing published is ever taken
//! away or changed — no field renumbered, retyped, renamed or removed (a removed field's number
//! is `reserved`, never reused), no enum value or method changed. Additions only.
//!
//! `proto/cuttle/v1/public.lock` lists every published element, one per line, as the previous
//! commit left it. Every line there must still describe the compiled descriptor set; a new
//! element fails the test until it is added to the lock (`CUTTLE_UPDATE_WIRE_LOCK=1 cargo test
//! -p cuttle-proto --test public_wire` writes the additions — never a change), so each addition
//! is a reviewed line in a commit.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

fn lock_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/cuttle/v1/public.lock")
}

fn type_name(f: &prost_types::FieldDescriptorProto) -> String {
    match f.r#type() {
        Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_owned(),
        t => t.as_str_name().trim_start_matches("TYPE_").to_lowercase(),
    }
}

fn message_lines(prefix: &str, m: &DescriptorProto, out: &mut BTreeSet<String>) {
    let name = format!("{prefix}.{}", m.name());
    for f in &m.field {
        let label = match (f.label(), f.proto3_optional()) {
            (Label::Repeated, _) => "repeated ",
            (_, true) => "optional ",
            _ => "",
        };
        let oneof = f
            .oneof_index
            .filter(|_| !f.proto3_optional())
            .map(|i| format!(" oneof {}", m.oneof_decl[i as usize].name()))
            .unwrap_or_default();
        out.insert(format!(
            "message {name} field {} {} {label}{}{oneof}",
            f.number(),
            f.name(),
            type_name(f)
        ));
    }
    for r in &m.reserved_range {
        for n in r.start()..r.end() {
            out.insert(format!("message {name} reserved {n}"));
        }
    }
    for nested in &m.nested_type {
        message_lines(&name, nested, out);
    }
    for e in &m.enum_type {
        for v in &e.value {
            out.insert(format!(
                "enum {name}.{} value {} {}",
                e.name(),
                v.number(),
                v.name()
            ));
        }
    }
}

/// Every published element of `cuttle.v1` in the compiled descriptor set.
fn published() -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(cuttle_proto::PUBLIC_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeSet::new();
    for file in set.file.iter().filter(|f| f.package() == "cuttle.v1") {
        let pkg = "cuttle.v1";
        for m in &file.message_type {
            message_lines(pkg, m, &mut out);
        }
        for e in &file.enum_type {
            for v in &e.value {
                out.insert(format!(
                    "enum {pkg}.{} value {} {}",
                    e.name(),
                    v.number(),
                    v.name()
                ));
            }
        }
        for s in &file.service {
            for m in &s.method {
                let stream = |on: bool| if on { "stream " } else { "" };
                out.insert(format!(
                    "service {pkg}.{} rpc {} ({}{}) returns ({}{})",
                    s.name(),
                    m.name(),
                    stream(m.client_streaming()),
                    m.input_type().trim_start_matches('.'),
                    stream(m.server_streaming()),
                    m.output_type().trim_start_matches('.'),
                ));
            }
        }
    }
    out
}

#[test]
fn the_public_api_only_grows() {
    let now = published();
    let text = std::fs::read_to_string(lock_path()).unwrap_or_default();
    let locked: BTreeSet<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let broken: Vec<&String> = locked.difference(&now).collect();
    assert!(
        broken.is_empty(),
        "published elements of cuttle.v1 changed or went away (a breaking change: add a new \
         field or method instead, and `reserved` the number of one removed):\n{}",
        broken
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let added: Vec<&String> = now.difference(&locked).collect();
    if added.is_empty() {
        return;
    }
    if std::env::var_os("CUTTLE_UPDATE_WIRE_LOCK").is_some() {
        let mut all: Vec<&String> = now.iter().collect();
        all.sort();
        let body = all.iter().map(|l| format!("{l}\n")).collect::<String>();
        let head = "# The published elements of cuttle.v1 (proto/cuttle/v1/*.proto, public files):\n\
                    # a line here is a promise to clients. Checked by crates/proto/tests/public_wire.rs.\n";
        std::fs::write(lock_path(), format!("{head}{body}")).unwrap();
        return;
    }
    panic!(
        "new elements of cuttle.v1 are not in proto/cuttle/v1/public.lock; add them \
         (CUTTLE_UPDATE_WIRE_LOCK=1 cargo test -p cuttle-proto --test public_wire):\n{}",
        added
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
