//! The errors a caller meets when it configures a node or submits through it: caller
//! mistakes, returned as `Err` (a peer's faults are inputs, reported as
//! [`Violation`](crate::Violation)s in the node's events instead).

use std::time::Duration;

use crate::config::IAMALIVE_PERIOD_MAX;

#[cfg(doc)]
use super::Node;

/// A configuration the node cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `local_ivo` is not a valid IVOA identifier.
    #[error(
        "invalid local IVOID {ivo:?}: {reason}; give an identifier like ivo://example.org/broker"
    )]
    LocalIvo {
        /// The value given.
        ivo: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream has no endpoint.
    #[error("upstream {0} has no endpoint; give at least one HOST[:PORT]")]
    EmptyUpstream(usize),
    /// The iamalive period is zero or over [`IAMALIVE_PERIOD_MAX`] (VTP 2.0 §5: a subscriber
    /// must hear from its broker after at most 90 s of inactivity).
    #[error(
        "iamalive period {given:?} is out of range: VTP 2.0 requires an iamalive after at most {:?} of inactivity; give a period above zero and at most {:?}",
        IAMALIVE_PERIOD_MAX,
        IAMALIVE_PERIOD_MAX
    )]
    IamalivePeriod {
        /// The period given.
        given: Duration,
    },
    /// A filter of this node's own is too long.
    #[error("filter {index} is {len} bytes long, over the limit of {max}; shorten it")]
    FilterTooLong {
        /// Position in the list.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A submission the node cannot make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The payload is not a well-formed VOEvent.
    #[error("not a valid VOEvent: {0}")]
    NotAnEvent(String),
    /// The payload is larger than a frame may be.
    #[error("event is {len} bytes, over the frame limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// [`Node::shutdown`] was called: the node opens no more connections.
    #[error("the node is shutting down: submit before calling shutdown, or to a new node")]
    ShuttingDown,
}
