//! The log subscriber of every Cuttle binary: human lines or JSON objects on stderr, filtered by
//! an `EnvFilter` directive. The fields of the spans a line is written in (a task's id, a
//! request's route) are part of the line in both formats.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Installs the process's subscriber: `filter` (an `EnvFilter` directive, checked by the caller
/// with [`check_filter`]) plus `quiet` directives added unless the filter names their target.
pub fn init(filter: &str, quiet: &[&str], format: Format) {
    let mut env_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in quiet {
        let target = directive.split(['=', ':']).next().unwrap_or(directive);
        if !filter.contains(target) {
            if let Ok(d) = directive.parse() {
                env_filter = env_filter.add_directive(d);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Why `filter` is not a directive [`init`] can use; `None` when it is.
pub fn check_filter(filter: &str) -> Option<String> {
    EnvFilter::try_new(filter).err().map(|e| e.to_string())
}
