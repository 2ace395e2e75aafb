//! How results are printed (`--output`): a table for people, JSON or YAML for programs.

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// What a command that makes or changes something prints: a sentence for people, or (with
/// `--output json|yaml`) the object it made or changed, for programs.
pub(crate) fn done(output: Output, v: &Value, sentence: impl std::fmt::Display) {
    match output {
        Output::Table => println!("{sentence}"),
        _ => show(output, v, &[]),
    }
}

/// What a command that removes something prints: [`done`] with `{"deleted": id}`.
pub(crate) fn deleted(output: Output, id: &str, sentence: impl std::fmt::Display) {
    done(output, &serde_json::json!({"deleted": id}), sentence);
}

/// `v` as YAML (a value JSON can hold always is).
pub(crate) fn yaml(v: &Value) -> String {
    yaml_serde::to_string(v).unwrap_or_else(|e| format!("# cannot be shown as YAML: {e}\n"))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(rows: &[Value], cols: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| s(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

pub(crate) fn show(output: Output, v: &Value, cols: &[&str]) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Yaml => print!("{}", yaml(v)),
        Output::Table => match v.get("items").and_then(Value::as_array) {
            Some(items) => table(items, cols),
            None => table(std::slice::from_ref(v), cols),
        },
    }
}
