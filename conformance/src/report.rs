//! Results of a run and their table.

use std::fmt;
use std::time::Duration;

use crate::Scenario;

/// How one scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The node behaved as the rule says.
    Pass,
    /// The node did not; the reason says what was seen instead.
    Fail(String),
    /// The scenario was not run; the reason says why (e.g. not selected).
    Skipped(String),
}

impl Outcome {
    /// Whether this is [`Outcome::Pass`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass)
    }

    /// Whether this is [`Outcome::Fail`].
    pub fn is_fail(&self) -> bool {
        matches!(self, Self::Fail(_))
    }
}

/// One scenario's outcome and how long it took.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran (zero when skipped).
    pub elapsed: Duration,
}

/// The results of [`run`](crate::run), one per scenario, in [`scenarios`](crate::scenarios)
/// order. Its `Display` is the pass/fail table.
#[derive(Debug, Clone)]
pub struct Report {
    results: Vec<ScenarioResult>,
    elapsed: Duration,
}

impl Report {
    pub(crate) fn new(results: Vec<ScenarioResult>, elapsed: Duration) -> Self {
        Self { results, elapsed }
    }

    /// Every result, in scenario order.
    pub fn results(&self) -> &[ScenarioResult] {
        &self.results
    }

    /// The outcome of the scenario called `name`, if the suite has one.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|r| r.scenario.name == name)
            .map(|r| &r.outcome)
    }

    /// The results that failed.
    pub fn failures(&self) -> impl Iterator<Item = &ScenarioResult> {
        self.results.iter().filter(|r| r.outcome.is_fail())
    }

    /// Whether every scenario that ran passed (true when nothing ran).
    pub fn all_passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Wall-clock time of the whole run.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self
            .results
            .iter()
            .map(|r| r.scenario.name.len())
            .max()
            .unwrap_or(0)
            .max("scenario".len());
        let source_w = self
            .results
            .iter()
            .map(|r| r.scenario.source.chars().count())
            .max()
            .unwrap_or(0)
            .max("source".len());
        writeln!(
            f,
            "{:name_w$}  {:source_w$}  {:6}  {:>7}",
            "scenario", "source", "result", "time"
        )?;
        let (mut pass, mut fail, mut skip) = (0, 0, 0);
        for r in &self.results {
            let (word, detail) = match &r.outcome {
                Outcome::Pass => {
                    pass += 1;
                    ("pass", None)
                }
                Outcome::Fail(why) => {
                    fail += 1;
                    ("FAIL", Some(why.as_str()))
                }
                Outcome::Skipped(why) => {
                    skip += 1;
                    ("skip", Some(why.as_str()))
                }
            };
            let time = if matches!(r.outcome, Outcome::Skipped(_)) {
                String::new()
            } else {
                secs(r.elapsed)
            };
            // `{:w$}` pads by chars, which is what the `§` in sources needs.
            write!(
                f,
                "{:name_w$}  {:source_w$}  {word:6}  {time:>7}",
                r.scenario.name, r.scenario.source
            )?;
            match detail {
                Some(d) => writeln!(f, "  {d}")?,
                None => writeln!(f)?,
            }
        }
        write!(
            f,
            "{pass} passed, {fail} failed, {skip} skipped in {}",
            secs(self.elapsed)
        )
    }
}

/// `1.23s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
