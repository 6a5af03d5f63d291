//! Sans-IO core of the VOEvent Transport Protocol: framing, messages and the VTP role machines.
#![warn(missing_docs)]

pub mod frame;
pub mod outbox;
