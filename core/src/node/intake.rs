//! Intake: an author's connection to us. The first frame is the submission; it is checked
//! (docs/protocol.md §4.1: IVOID, version, schema), answered with an ack or a nak, and the
//! connection closed, at once or once the event's record is durable.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{AcceptVersions, DuplicateReply, Durability, SchemaCheck};
use crate::ivoid;
use crate::message::{self, Message, ParseError, VoEvent, VoEventNamespace};
use crate::output::{Action, CloseReason, ConnId, ConnRole, Event, Remote, Source};
use crate::schema::{self, SchemaError};
use crate::seen::{ElementHash, EventKey, Seen, SeenSource};
use crate::violation::Violation;

use super::Node;
use super::feed::Accepted;

/// The nak reason for an author's new event while the store's commits fail (see
/// [`Node::handle_store_status`]): the event was not recorded; the author may send it again.
pub const NAK_STORE_UNAVAILABLE: &str =
    "Event rejected: storage unavailable at this broker; not recorded, try again later";

/// A new event from an author, checked and with its signature decided.
pub(super) struct NewEvent<'a> {
    pub(super) ivorn: &'a str,
    pub(super) role: crate::message::EventRole,
    pub(super) element: std::ops::Range<usize>,
    pub(super) spans: Option<crate::summary::Spans>,
    pub(super) key: EventKey,
    pub(super) signature: Option<crate::signature::Signature>,
}

impl Node {
    pub(super) fn intake_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let (msg, schema) = match self.parse_event(payload) {
            Ok(read) => read,
            Err(error) => {
                let on = ConnRole::Intake;
                return self.reject(conn, "", Violation::Unparsable { on, error }, now);
            }
        };
        let ev = match msg {
            Message::VoEvent(ev) => ev,
            Message::Transport(t) => {
                let violation = Violation::UnexpectedTransport { role: t.role };
                return self.reject(conn, "", violation, now);
            }
        };
        if let Err(violation) = self.check_event(payload, &ev, schema, ConnRole::Intake) {
            return self.reject(conn, &ev.ivorn, violation, now);
        }
        let hash = ElementHash::of(&payload[ev.element.clone()]);
        let key = hash.key();
        if self.refuses_for_store(&key) {
            return self.reject(conn, &ev.ivorn, Violation::StoreUnavailable, now);
        }
        if self.verify_later(conn, payload, &ev, key, &hash) {
            return;
        }
        let signature = match self.check_signature(payload, &ev, &hash, &key) {
            Ok(signature) => signature,
            Err(signature) => {
                let violation = Violation::Signature {
                    on: ConnRole::Intake,
                    ivorn: ev.ivorn.to_string(),
                    signature,
                };
                return self.reject(conn, &ev.ivorn, violation, now);
            }
        };
        let event = NewEvent {
            ivorn: &ev.ivorn,
            role: ev.role,
            element: ev.element.clone(),
            spans: ev.spans.clone(),
            key,
            signature,
        };
        self.intake_accept(conn, payload, event, now);
    }

    /// The rest of an author's submission once its signature is decided (here, or by
    /// [`Node::handle_verdict`]): dedup, then ack or nak, persist, forward.
    pub(super) fn intake_accept(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        event: NewEvent<'_>,
        now: Instant,
    ) {
        let NewEvent {
            ivorn,
            role,
            element,
            spans,
            key,
            signature,
        } = event;
        let Some(remote) = self.remote(conn) else {
            return;
        };
        let unix = self.clock.unix_secs_at(now);
        let source = self
            .authors
            .get(&conn)
            .copied()
            .unwrap_or(SeenSource::Other);
        let seen = self.seen.check_and_insert(key, unix, source);
        self.note_seen_level();
        match seen {
            Seen::Refused => self.reject(conn, ivorn, Violation::SeenQuota, now),
            Seen::Duplicate => {
                self.actions.push_back(Action::DropDuplicate { conn, key });
                self.events.push_back(Event::Duplicate {
                    conn,
                    key,
                    ivorn: Arc::from(ivorn),
                    remote,
                });
                let mark = self.actions.len();
                match self.config.policy.duplicate_reply {
                    DuplicateReply::Ack => self.ack(conn, ivorn, now),
                    DuplicateReply::Nak => self.nak(
                        conn,
                        ivorn,
                        "Event rejected: Previously seen by this broker",
                        now,
                    ),
                }
                self.end_intake(conn, mark, now);
            }
            Seen::New { evicted } => {
                let accepted = Accepted {
                    source: Source::Author(conn),
                    ivorn: Arc::from(ivorn),
                    key,
                    role,
                    signature: signature.map(Arc::new),
                    spans: spans.map(Arc::new),
                };
                let frame = self.frame_event(&accepted, payload);
                self.persist(key, unix, evicted);
                let mark = self.actions.len();
                self.ack(conn, ivorn, now);
                self.end_intake(conn, mark, now);
                if let Some(frame) = frame {
                    self.accept_event(conn, accepted, frame, element, remote);
                }
            }
        }
    }

    /// True when the event `key` would need a persist the store cannot make now: the store
    /// reports failing commits, replies wait for durability, and the event is not a duplicate.
    pub(super) fn refuses_for_store(&self, key: &EventKey) -> bool {
        !self.store_healthy
            && self.config.policy.durability == Durability::BeforeReply
            && !self.seen.contains(key)
    }

    /// Parses an author's or an external source's payload, with the schema check in the same
    /// pass when the policy asks for one: the message, and for a VOEvent the schema's verdict
    /// (`None` when not checked), for [`Node::check_event`].
    pub(super) fn parse_event<'a>(
        &self,
        payload: &'a [u8],
    ) -> Result<(Message<'a>, Option<Result<(), SchemaError>>), ParseError> {
        let limits = &self.config.limits.parse;
        if self.config.policy.schema == SchemaCheck::V2_0 {
            let read = schema::parse_and_validate(payload, limits)?;
            Ok((read.message, read.schema))
        } else {
            Ok((message::parse(payload, limits)?, None))
        }
    }

    /// Receiver checks on an author's event (docs/protocol.md §4.1), or an external source's
    /// (`on`): IVOID, version, then schema (`schema`: the verdict of [`Node::parse_event`]).
    pub(super) fn check_event(
        &self,
        payload: &[u8],
        ev: &VoEvent<'_>,
        schema: Option<Result<(), SchemaError>>,
        on: ConnRole,
    ) -> Result<(), Violation> {
        if let Err(error) = ivoid::check_event_ivorn(&ev.ivorn) {
            return Err(Violation::BadIvorn {
                on,
                ivorn: ev.ivorn.to_string(),
                error,
            });
        }
        if self.config.policy.accept_versions == AcceptVersions::V2_0
            && ev.namespace != VoEventNamespace::V2_0
        {
            return Err(Violation::UnsupportedVersion {
                namespace: ev.namespace,
                namespace_uri: ev.namespace_uri.as_deref().map(str::to_owned),
            });
        }
        // Only 2.0 packets are schema-checked: with `AcceptVersions::Any`, 1.1 and
        // namespace-less packets pass without one (there is no schema for them here).
        if self.config.policy.schema == SchemaCheck::V2_0 && ev.namespace == VoEventNamespace::V2_0
        {
            let verdict = schema.unwrap_or_else(|| {
                schema::validate_voevent_2_0(payload, ev.element.clone(), &self.config.limits.parse)
            });
            verdict.map_err(Violation::Schema)?;
        }
        Ok(())
    }

    pub(super) fn reject(&mut self, conn: ConnId, ivorn: &str, reason: Violation, now: Instant) {
        self.nak(conn, ivorn, &reason.to_string(), now);
        let remote = self
            .remote(conn)
            .unwrap_or(Remote::Accepted(crate::output::Peer::Local));
        self.events.push_back(Event::Rejected {
            conn,
            reason,
            remote,
        });
        self.close(conn, CloseReason::Done, now);
    }

    pub(super) fn ack(&mut self, conn: ConnId, ivorn: &str, now: Instant) {
        let ts = self.stamp(now);
        let frame = message::build_ack(ivorn, self.local_ivo.as_deref(), ts.as_str());
        self.actions.push_back(Action::Ack { conn, frame });
    }

    /// A nak answers one submission; its `Origin` is the event's ivorn, or, when the ivorn
    /// could not be read, our own IVOID (an `Origin` must never be empty: pygcn and Comet
    /// read it unconditionally).
    pub(super) fn nak(&mut self, conn: ConnId, ivorn: &str, reason: &str, now: Instant) {
        let ivorn = match (ivorn.is_empty(), self.local_ivo.as_deref()) {
            (true, Some(local)) => local,
            (true, None) => "ivo://vtp/unknown",
            (false, _) => ivorn,
        };
        let ts = self.stamp(now);
        let frame = message::build_nak(ivorn, self.local_ivo.as_deref(), ts.as_str(), reason);
        self.actions.push_back(Action::Nak { conn, frame });
    }

    /// Closes an intake after its receipt (queued since `mark`): at once, or, when the receipt
    /// must wait for the store, with the close held behind it and the connection kept open (and
    /// ignored) until then.
    fn end_intake(&mut self, conn: ConnId, mark: usize, now: Instant) {
        if self.holding() {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::Done,
            });
            self.replying.insert(conn);
            self.hold(mark);
        } else {
            self.close(conn, CloseReason::Done, now);
        }
    }
}
