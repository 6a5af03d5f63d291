//! Helpers shared by the crate's unit tests.

use std::time::Instant;

/// The origin of virtual time in tests. Reading the clock once to obtain *an* `Instant` is the
/// only way to construct one; every later instant is derived from it by adding durations.
#[allow(clippy::disallowed_methods)]
pub(crate) fn origin() -> Instant {
    Instant::now()
}
