//! vtp-core: the sans-IO core of the VOEvent Transport Protocol (no sockets, threads or clocks).
#![warn(missing_docs)]

pub mod ivoid;
pub mod time;
pub mod whitelist;
