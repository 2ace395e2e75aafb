//! A deployment's log cut into sections a page can fold: one per step (its header line
//! `=== step N: name ===` to its end line `=== step N: name: succeeded in …`), and inside a step
//! one per target (lines tagged `[target]`). Lines before the first step are their own section.
//! `cuttle.js` routes lines that arrive live the same way.

/// One step of the log, or what came before the steps.
pub(super) struct Section {
    pub(super) title: String,
    /// `running` until the step's end line; then `succeeded`, `failed`, `stopped` or
    /// `skipped`. Empty for the lines before the steps.
    pub(super) outcome: &'static str,
    /// Lines of the step not tagged with a target (its header and end lines among them).
    pub(super) lines: String,
    pub(super) targets: Vec<TargetLines>,
    /// The step's number, to match its end line with it.
    number: Option<u32>,
}

impl Section {
    /// Folded when it went well: what needs reading stays open.
    pub(super) fn open(&self) -> bool {
        !matches!(self.outcome, "succeeded" | "skipped")
    }

    /// The step's number as the page marks it (empty before the steps).
    pub(super) fn step(&self) -> String {
        self.number.map(|n| n.to_string()).unwrap_or_default()
    }
}

/// A target's lines within a step.
pub(super) struct TargetLines {
    pub(super) name: String,
    pub(super) lines: String,
}

/// What a line says once its time and level are taken off.
fn message(line: &str) -> &str {
    let mut rest = line.trim_start();
    // The time stamp, then the level (INFO, WARN, ERROR, OUT, ERR).
    for _ in 0..2 {
        match rest.split_once(char::is_whitespace) {
            Some((_, r)) => rest = r.trim_start(),
            None => return "",
        }
    }
    rest
}

/// `(number, name)` of a step's header line.
fn header(msg: &str) -> Option<(u32, &str)> {
    let body = msg.strip_prefix("=== step ")?.strip_suffix(" ===")?;
    let (n, name) = body.split_once(": ")?;
    Some((n.parse().ok()?, name))
}

/// `(number, outcome)` of a step's end line.
fn end(msg: &str) -> Option<(u32, &'static str)> {
    let body = msg.strip_prefix("=== step ")?;
    let (n, rest) = body.split_once(": ")?;
    let outcome = [
        (": succeeded in ", "succeeded"),
        (": failed in ", "failed"),
        (": stopped after ", "stopped"),
        (": skipped (", "skipped"),
    ]
    .into_iter()
    .find(|(m, _)| rest.contains(m))?
    .1;
    Some((n.parse().ok()?, outcome))
}

/// A line that starts or ends a step: its number, its name, and `started` or how it ended
/// (`succeeded`, `failed`, `stopped`, `skipped`).
pub(crate) fn step_line(line: &str) -> Option<(u32, String, &'static str)> {
    let msg = message(line.trim_end_matches(['\n', '\r']));
    if let Some((n, name)) = header(msg) {
        return Some((n, name.to_owned(), "started"));
    }
    let (n, outcome) = end(msg)?;
    let rest = msg.strip_prefix("=== step ")?.split_once(": ")?.1;
    let name = [
        ": succeeded in ",
        ": failed in ",
        ": stopped after ",
        ": skipped (",
    ]
    .into_iter()
    .find_map(|m| rest.find(m).map(|i| &rest[..i]))
    .unwrap_or(rest);
    Some((n, name.to_owned(), outcome))
}

/// The target a line is tagged with: `[name] …`.
fn target(msg: &str) -> Option<&str> {
    let inner = msg.strip_prefix('[')?;
    let (name, _) = inner.split_once("] ").or_else(|| {
        inner
            .strip_suffix(']')
            .map(|n| (n, ""))
            .filter(|(n, _)| !n.contains(']'))
    })?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// Does the log have any step (or is it one section of lines before any)?
pub(super) fn has_steps(sections: &[Section]) -> bool {
    sections.iter().any(|s| s.number.is_some())
}

/// The log's sections, in order (a log without steps is one section: "Before the steps").
pub(super) fn sections(log: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in log.split_inclusive('\n') {
        let msg = message(line.trim_end_matches(['\n', '\r']));
        if let Some((n, name)) = header(msg) {
            out.push(Section {
                title: format!("Step {n}: {name}"),
                outcome: "running",
                lines: line.to_owned(),
                targets: Vec::new(),
                number: Some(n),
            });
            continue;
        }
        if let Some((n, outcome)) = end(msg) {
            // A skipped step has no header: its end line is its whole section.
            match out.iter_mut().rev().find(|s| s.number == Some(n)) {
                Some(s) if outcome != "skipped" => {
                    s.outcome = outcome;
                    s.lines.push_str(line);
                }
                _ => out.push(Section {
                    title: format!("Step {n}"),
                    outcome,
                    lines: line.to_owned(),
                    targets: Vec::new(),
                    number: Some(n),
                }),
            }
            continue;
        }
        // Lines after a step ended and before another starts (the outcome, at the end) are a
        // section of their own, not the ended step's.
        let ended = out
            .last()
            .is_some_and(|s| s.number.is_some() && s.outcome != "running");
        if ended {
            out.push(Section {
                title: "After the steps".to_owned(),
                outcome: "",
                lines: String::new(),
                targets: Vec::new(),
                number: None,
            });
        }
        if out.is_empty() {
            out.push(Section {
                title: "Before the steps".to_owned(),
                outcome: "",
                lines: String::new(),
                targets: Vec::new(),
                number: None,
            });
        }
        let current = out.last_mut().expect("a section was just made");
        match target(msg).filter(|_| current.number.is_some()) {
            Some(name) => match current.targets.iter_mut().find(|t| t.name == name) {
                Some(t) => t.lines.push_str(line),
                None => current.targets.push(TargetLines {
                    name: name.to_owned(),
                    lines: line.to_owned(),
                }),
            },
            None => current.lines.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{has_steps, sections, step_line};

    const LOG: &str = "\
2026-11-29T10:00:00.000Z INFO  deploying release 1.0.0 to Production
2026-11-29T10:00:00.100Z INFO  === step 1: Migrate ===
2026-11-29T10:00:00.200Z OUT   migrating
2026-11-29T10:00:00.300Z INFO  === step 1: Migrate: succeeded in 0.20 s
2026-11-29T10:00:00.400Z INFO  === step 2: Web ===
2026-11-29T10:00:00.450Z INFO  running on web-1, web-2
2026-11-29T10:00:00.500Z OUT   [web-1] hello <script>
2026-11-29T10:00:00.510Z ERR   [web-2] oops
2026-11-29T10:00:00.520Z OUT   [web-1] again
2026-11-29T10:00:00.600Z ERROR [web-2] failed in 0.1 s: web-2 exited with code 3
2026-11-29T10:00:00.700Z ERROR === step 2: Web: failed in 0.3 s: web-2 exited with code 3
2026-11-29T10:00:00.800Z INFO  === step 3: Notify: skipped (an earlier step failed)
2026-11-29T10:00:00.900Z ERROR Failed: step \"Web\": web-2 exited with code 3
";

    #[test]
    fn step_lines_say_which_step_started_or_ended_and_how() {
        let steps: Vec<(u32, String, &str)> = LOG.lines().filter_map(step_line).collect();
        let want = [
            (1, "Migrate", "started"),
            (1, "Migrate", "succeeded"),
            (2, "Web", "started"),
            (2, "Web", "failed"),
            (3, "Notify", "skipped"),
        ];
        let got: Vec<(u32, &str, &str)> =
            steps.iter().map(|(n, s, o)| (*n, s.as_str(), *o)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn steps_and_targets_become_sections_with_their_outcomes() {
        let s = sections(LOG);
        let titles: Vec<(&str, &str)> = s.iter().map(|s| (s.title.as_str(), s.outcome)).collect();
        assert_eq!(
            titles,
            [
                ("Before the steps", ""),
                ("Step 1: Migrate", "succeeded"),
                ("Step 2: Web", "failed"),
                ("Step 3", "skipped"),
                ("After the steps", ""),
            ]
        );
        assert!(s[4].lines.contains("Failed: step"));
        assert!(s[1].lines.contains("migrating") && s[1].targets.is_empty());
        assert!(!s[1].open() && s[2].open() && !s[3].open());
        let web: Vec<(&str, usize)> = s[2]
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.lines.lines().count()))
            .collect();
        assert_eq!(web, [("web-1", 2), ("web-2", 2)]);
        assert!(s[2].targets[0].lines.contains("hello <script>"));
        assert!(s[2].lines.contains("running on web-1, web-2"));
        // Every line is somewhere, once.
        let kept: usize = s
            .iter()
            .map(|s| {
                s.lines.lines().count()
                    + s.targets
                        .iter()
                        .map(|t| t.lines.lines().count())
                        .sum::<usize>()
            })
            .sum();
        assert_eq!(kept, LOG.lines().count());
    }

    #[test]
    fn a_step_still_running_stays_open_and_a_log_without_steps_has_no_sections() {
        let s = sections(&LOG[..LOG.find("2026-11-29T10:00:00.520Z").unwrap()]);
        assert_eq!(s.last().unwrap().outcome, "running");
        assert!(s.last().unwrap().open());
        let plain = sections("2026-11-29T10:00:00.000Z OUT   [x] just a script\n");
        assert!(!has_steps(&plain) && plain.len() == 1 && plain[0].targets.is_empty());
        assert!(sections("").is_empty());
        assert!(has_steps(&s));
    }
}
