//! What becomes of a script's output lines on their way to the task log: sensitive values
//! masked, output variables (`##cuttle[setVariable name='X' value='Y']`) and artifact requests
//! (`##cuttle[createArtifact path='…']`) collected.

use std::sync::Mutex;

use cuttle_core::plan::{mask, parse_create_artifact, parse_set_variable, ArtifactRequest};

/// An output variable a script set: on which target (`None`: the node), its name and value.
pub(crate) type SetVariable = (Option<String>, String, String);

/// The treatment of one script's output.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Values to mask wherever they appear, longest first.
    secrets: Vec<String>,
    /// Whether `setVariable` lines are collected.
    capture: bool,
    set: Mutex<Vec<SetVariable>>,
    /// Artifacts asked for, by target (`None`: the node); collected whatever the mode.
    artifacts: Mutex<Vec<(Option<String>, ArtifactRequest)>>,
}

impl Output {
    /// Lines go to the log as they are.
    pub(crate) fn plain() -> Output {
        Output::default()
    }

    /// Secrets masked and output variables collected (a deployment step's script).
    pub(crate) fn step(secrets: Vec<String>) -> Output {
        Output {
            secrets,
            capture: true,
            ..Output::default()
        }
    }

    /// The line as the log shows it, collecting an output variable it sets. A malformed
    /// `setVariable` line is logged with why it was not taken.
    pub(crate) fn line(&self, target: Option<&str>, text: &str) -> String {
        let shown = mask(text, &self.secrets);
        match parse_create_artifact(text) {
            None => {}
            Some(Ok(a)) => {
                self.artifacts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((target.map(str::to_owned), a));
                return shown;
            }
            Some(Err(e)) => return format!("{shown}   (not taken: {e})"),
        }
        if !self.capture {
            return shown;
        }
        match parse_set_variable(text) {
            None => shown,
            Some(Ok((name, value))) => {
                self.set.lock().unwrap_or_else(|p| p.into_inner()).push((
                    target.map(str::to_owned),
                    name,
                    value,
                ));
                shown
            }
            Some(Err(e)) => format!("{shown}   (not taken: {e})"),
        }
    }

    /// The artifacts asked for on `target` (`None`: the node), in order; taken out.
    pub(crate) fn take_artifacts(&self, target: Option<&str>) -> Vec<ArtifactRequest> {
        let mut all = self.artifacts.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|(t, _)| t.as_deref() == target);
        *all = rest;
        mine.into_iter().map(|(_, a)| a).collect()
    }

    /// The output variables collected, in the order they were set.
    pub(crate) fn take_set(&self) -> Vec<SetVariable> {
        std::mem::take(&mut *self.set.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_s_output_is_masked_and_its_variables_collected() {
        let out = Output::step(vec!["hunter2".into()]);
        assert_eq!(
            out.line(Some("web-1"), "password is hunter2"),
            "password is ********"
        );
        assert_eq!(
            out.line(Some("web-1"), "##cuttle[setVariable name='V' value='1.2']"),
            "##cuttle[setVariable name='V' value='1.2']"
        );
        assert!(out
            .line(None, "##cuttle[setVariable name='V']")
            .contains("not taken"));
        // A secret inside an output variable's line is masked in the log, kept in the value.
        out.line(None, "##cuttle[setVariable name='P' value='hunter2']");
        assert_eq!(
            out.take_set(),
            vec![
                (Some("web-1".into()), "V".into(), "1.2".into()),
                (None, "P".into(), "hunter2".into())
            ]
        );
        let plain = Output::plain();
        assert_eq!(
            plain.line(None, "##cuttle[setVariable name='V' value='1']"),
            "##cuttle[setVariable name='V' value='1']"
        );
        assert!(plain.take_set().is_empty());
    }
}
