//! No CI runtime: a run from a terminal or a script. It shows nothing beyond the log and the
//! `--json` report.

use std::io::Write;

use super::{Event, Runtime};
use crate::report::Report;

/// Runs outside a runner. GitHub's own variables are still honoured when a script sets them
/// (`GITHUB_REF`, `GITHUB_REPOSITORY`, the run's URL), as in 1.0: tests and `act` name the
/// repository that way.
#[derive(Debug, Clone, Default)]
pub struct Local {
    event: Event,
}

impl Local {
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        Local { event: super::actions::ambient(&var) }
    }
}

impl Runtime for Local {
    fn event(&self) -> Event {
        self.event.clone()
    }

    fn mask(&self, _log: &mut dyn Write, _secret: &str) -> std::io::Result<()> {
        Ok(())
    }

    fn group_start(&self, _log: &mut dyn Write, _title: &str) -> std::io::Result<()> {
        Ok(())
    }

    fn group_end(&self, _log: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn finish(&self, _log: &mut dyn Write, _report: &Report) -> anyhow::Result<()> {
        Ok(())
    }
}
