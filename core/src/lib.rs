#![warn(missing_docs)]
//! Sans-IO core of the VOEvent Transport Protocol (VTP): framing, messages and role machines.

pub mod message;
