//! [`PrintEvent`]: every event logged at INFO (`--print-event`).

use crate::text::printable;
use tracing::info;
use vtp_core::Delivery;

use super::{Handler, HandlerError};

/// Logs every event at INFO: its ivorn and its payload as text (`--print-event`).
///
/// Unlike Comet, which logs a re-serialised element, this logs the received bytes (invalid
/// UTF-8 replaced by U+FFFD).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrintEvent;

impl Handler for PrintEvent {
    fn name(&self) -> &str {
        "print-event"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let text = String::from_utf8_lossy(&delivery.payload);
        match &delivery.signature {
            Some(s) => {
                info!(ivorn = %delivery.ivorn, signature = %printable(&s.to_string()), "{text}")
            }
            None => info!(ivorn = %delivery.ivorn, "{text}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::GCN;
    use crate::testutil::{capture_logs, delivery};

    #[test]
    fn print_event_logs_ivorn_and_payload_as_text() {
        let d = delivery(
            GCN,
            b"<voe:VOEvent ivorn=\"x\">caf\xc3\xa9 \xff</voe:VOEvent>",
        );
        let (result, logs) = capture_logs(|| PrintEvent.handle(&d));
        result.unwrap();
        assert!(logs.contains(" INFO "), "{logs}");
        assert!(logs.contains(GCN), "{logs}");
        assert!(
            logs.contains("<voe:VOEvent ivorn=\"x\">café \u{FFFD}</voe:VOEvent>"),
            "{logs}"
        );
    }
}
