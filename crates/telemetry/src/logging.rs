//! The log subscriber of every Cuttle binary: human lines or JSON objects on stderr, filtered by
//! an `EnvFilter` directive, and — beside them, filtered on its own — the OpenTelemetry layer
//! that turns Cuttle's spans into a trace ([`crate::trace`]). The fields of the spans a line is
//! written in (a task's id, its trace id) are part of the line in both formats.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::trace::Tracing;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One human line per event, its spans' fields before the message.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`, the current `span`
    /// and every enclosing one in `spans`.
    Json,
}

impl Format {
    /// `text` or `json` (what `CUTTLE_LOG_FORMAT` takes).
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Installs the process's subscriber: log lines filtered by `filter` (an `EnvFilter`
/// directive, checked by the caller with [`check_filter`]) plus `quiet` directives added unless
/// the filter names their target; and, when given, the spans of Cuttle's own crates at INFO
/// and above for `tracing` — whatever the log filter, and never the spans of the libraries
/// beneath (the exporter's own HTTP/2 calls among them).
pub fn init(filter: &str, quiet: &[&str], format: Format, tracing: Option<&Tracing>) {
    let mut env_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in quiet {
        let target = directive.split(['=', ':']).next().unwrap_or(directive);
        if !filter.contains(target) {
            if let Ok(d) = directive.parse() {
                env_filter = env_filter.add_directive(d);
            }
        }
    }
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let lines = match format {
        Format::Text => lines.boxed(),
        Format::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let spans = tracing.map(|t| {
        t.layer()
            .with_filter(Targets::new().with_target("cuttle", LevelFilter::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(env_filter))
        .with(spans)
        .try_init();
}

/// Why `filter` is not a directive [`init`] can use; `None` when it is.
pub fn check_filter(filter: &str) -> Option<String> {
    EnvFilter::try_new(filter).err().map(|e| e.to_string())
}
