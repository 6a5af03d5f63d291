//! Submission: us as an author. Connect to a broker, send one event, and wait for its ack or
//! nak (with a deadline).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::endpoint::DialAddr;
use crate::frame;
use crate::message::{self, Message, TransportRole};
use crate::output::{Action, CloseReason, ConnId, ConnRole, Event, Remote};
use crate::violation::Violation;

use super::{Conn, Kind, Node, SubmitError, TimerKey};

#[derive(Debug)]
pub(super) struct Submission {
    pub(super) ivorn: Arc<str>,
    pub(super) frame: Bytes,
    pub(super) sent: bool,
}

impl Node {
    /// Submits one event to the broker at `addr`, as an author. The node emits
    /// [`Action::Connect`], then [`Action::Submit`] once connected, and finally one of
    /// [`Event::SubmissionAcked`], [`Event::SubmissionNaked`] or [`Event::SubmissionFailed`].
    /// The receipt deadline ([`Timing::receipt_timeout`](crate::config::Timing)) counts from now.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] if `payload` is not a well-formed VOEvent or is too large to frame, or
    /// if the node is shutting down.
    pub fn submit(
        &mut self,
        addr: DialAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<ConnId, SubmitError> {
        self.advance(now);
        if self.shut_down {
            return Err(SubmitError::ShuttingDown);
        }
        let max = self.config.limits.frame_len_max;
        if payload.len() > max as usize {
            return Err(SubmitError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let ivorn = match message::parse(payload, &self.config.limits.parse) {
            Ok(Message::VoEvent(ev)) => Arc::<str>::from(ev.ivorn.as_ref()),
            Ok(Message::Transport(_)) => {
                return Err(SubmitError::NotAnEvent(
                    "it is a Transport message, not a VOEvent".into(),
                ));
            }
            Err(e) => return Err(SubmitError::NotAnEvent(e.to_string())),
        };
        let frame = frame::encode(payload).map_err(|_| SubmitError::TooLarge {
            len: payload.len(),
            max,
        })?;
        let conn = self.mint();
        self.insert_conn(
            conn,
            Kind::Submission(Submission {
                ivorn,
                frame,
                sent: false,
            }),
            Remote::Dialled(Arc::from(addr.to_string())),
            now,
        );
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.receipt_timeout,
        );
        self.actions.push_back(Action::Connect { conn, addr });
        Ok(conn)
    }

    pub(super) fn submission_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(t) = self.expect_transport(conn, payload, ConnRole::Submission, now) else {
            return;
        };
        let Some(Conn {
            kind: Kind::Submission(sub),
            ..
        }) = self.conns.get(&conn)
        else {
            return;
        };
        let ours = *t.origin == *sub.ivorn;
        match t.role {
            TransportRole::Ack if ours => {
                self.events.push_back(Event::SubmissionAcked { conn });
                self.close(conn, CloseReason::Done, now);
            }
            // A nak must name our event, as an ack must: one for another event is a protocol
            // error (reported and ignored; the receipt deadline still runs), not a refusal.
            // `submit` only sends events whose ivorn it could read, so a broker can quote it.
            TransportRole::Nak if ours => {
                let reason = t.result.as_deref().map(str::to_owned);
                self.events
                    .push_back(Event::SubmissionNaked { conn, reason });
                self.close(conn, CloseReason::Done, now);
            }
            _ => {
                self.violation(
                    conn,
                    Violation::NotOurReceipt {
                        role: t.role,
                        origin: t.origin.into_owned(),
                        ivorn: sub.ivorn.clone(),
                    },
                    now,
                );
            }
        }
    }
}
