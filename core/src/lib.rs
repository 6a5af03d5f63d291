//! vtp-core (skeleton under construction)
