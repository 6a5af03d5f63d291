//! Configuration reload at run time (SIGHUP), delivered to the running loop the same way on
//! every runtime.
//!
//! A reload has two halves:
//!
//! 1. **Prepare**, off the loop (the signal thread, [`shutdown::on_signals_reloading`]): the
//!    program re-reads its configuration, checks it whole and loads what it names (TLS files,
//!    handler programs). A configuration that fails here is refused there, and nothing changes.
//!    What is left is a [`Request`]: the node's new [`Config`] and a `finish` callback.
//! 2. **Apply**, on the loop that owns the node: [`Requester::send`] puts the request in a
//!    one-slot mailbox ([`Reloads`]; a newer request replaces one not applied yet) and wakes the
//!    loop through the waker of its last poll. The async owner loop (`aio`, feature `async`) awaits
//!    [`Reloads::next`] beside its shutdown and its messages; the mio loop polls
//!    [`Reloads::poll_next`] with the task waker that fires its `mio::Waker`, as it polls the
//!    shutdown future. Either calls [`apply`]: [`Node::reconfigure`] decides what changes (it
//!    may refuse the config), then `finish` gets its answer and, on success, swaps what the
//!    host holds: the listeners' TLS configurations ([`Swap`]s read by the accept path), the
//!    handlers ([`HandlerSet`](crate::handlers::HandlerSet)), the log level.
//!
//! No connection is closed by a reload: new settings apply to new connections, new
//! handshakes and the next event.
//!
//! [`shutdown::on_signals_reloading`]: crate::shutdown::on_signals_reloading
//! [`Node::reconfigure`]: vtp_core::Node::reconfigure

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use vtp_core::Config;
use vtp_core::driver::{Driver, Effects};
use vtp_core::node::{ConfigError, Reconfigured};
use vtp_core::signature::{EventSigner, Verifier};

/// A value a reload replaces while readers keep taking the current one (a listener's TLS
/// configuration, read at every accept). Cloning shares it.
#[derive(Debug)]
pub struct Swap<T>(Arc<RwLock<T>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: Clone> Swap<T> {
    /// A cell holding `value`.
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// The current value.
    pub fn load(&self) -> T {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value: every later [`load`](Self::load) sees `value`.
    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

/// Called on the loop with the node's answer to a reload.
pub type Finish = Box<dyn FnOnce(Result<Reconfigured, ConfigError>) + Send>;

/// A prepared reload: the node's new configuration, and what to do with the node's answer.
pub struct Request {
    config: Config,
    finish: Finish,
    /// New verifier and signer, taken with the configuration ([`Request::with_signatures`]).
    signatures: Option<Signatures>,
}

/// A verifier and a signer for the node ([`Node::set_verifier`], [`Node::set_signer`]).
///
/// [`Node::set_verifier`]: vtp_core::Node::set_verifier
/// [`Node::set_signer`]: vtp_core::Node::set_signer
type Signatures = (Option<Box<dyn Verifier>>, Option<Box<dyn EventSigner>>);

impl Request {
    /// A reload to `config`; `finish` runs on the loop with [`Node::reconfigure`]'s answer:
    /// it swaps the host's parts on `Ok` and logs the refusal on `Err` (the node kept its
    /// configuration then). It must not block.
    ///
    /// [`Node::reconfigure`]: vtp_core::Node::reconfigure
    pub fn new(
        config: Config,
        finish: impl FnOnce(Result<Reconfigured, ConfigError>) + Send + 'static,
    ) -> Self {
        Self {
            config,
            finish: Box::new(finish),
            signatures: None,
        }
    }

    /// The node also takes this verifier (trusted keys read again) and signer, when it takes
    /// the configuration; a refused configuration keeps the running ones too.
    #[must_use]
    pub fn with_signatures(
        mut self,
        verifier: Option<Box<dyn Verifier>>,
        signer: Option<Box<dyn EventSigner>>,
    ) -> Self {
        self.signatures = Some((verifier, signer));
        self
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Slot {
    pending: Option<Request>,
    waker: Option<Waker>,
}

/// The sending end of the reload mailbox (the signal thread's). Cloneable.
#[derive(Clone)]
pub struct Requester(Arc<Mutex<Slot>>);

/// The loop's end of the reload mailbox: hand it to the runtime with
/// [`Bound::with_reloads`](crate::net::Bound::with_reloads).
pub struct Reloads(Arc<Mutex<Slot>>);

/// A new reload mailbox.
pub fn channel() -> (Requester, Reloads) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (Requester(Arc::clone(&slot)), Reloads(slot))
}

impl Requester {
    /// Queues `request` for the loop and wakes it. A request the loop has not taken yet is
    /// replaced (the newest configuration wins); returns true when one was.
    pub fn send(&self, request: Request) -> bool {
        let (replaced, waker) = {
            let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let replaced = slot.pending.replace(request).is_some();
            (replaced, slot.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        replaced
    }
}

impl Reloads {
    /// The next request, once one is sent; registers `cx`'s waker while there is none. Never
    /// ends: without a sender it stays pending.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Request> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.pending.take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Completes with the next request.
    pub async fn next(&self) -> Request {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl fmt::Debug for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Requester")
    }
}

impl fmt::Debug for Reloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reloads")
    }
}

/// Applies `request` on the loop: the node takes the new configuration (or refuses it), its
/// output is dispatched, and the request's `finish` gets the answer.
pub fn apply(driver: &mut Driver, request: Request, now: Instant, fx: &mut impl Effects) {
    let Request {
        config,
        finish,
        signatures,
    } = request;
    let answer = driver.with_node(fx, |node| {
        let answer = node.reconfigure(config, now);
        if let (Ok(_), Some((verifier, signer))) = (&answer, signatures) {
            node.set_verifier(verifier);
            node.set_signer(signer);
        }
        answer
    });
    finish(answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Mutex<u32>);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        }
    }

    fn request(ivo: &str, seen: &Arc<Mutex<Vec<String>>>) -> Request {
        let seen = Arc::clone(seen);
        let name = ivo.to_owned();
        Request::new(Config::new(Some(ivo.into())), move |_| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(name);
        })
    }

    #[test]
    fn a_request_wakes_the_loop_and_a_newer_one_replaces_one_not_taken() {
        let (tx, rx) = channel();
        let flag = Arc::new(Flag(Mutex::new(0)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_next(&mut cx).is_pending());
        let seen = Arc::default();
        assert!(!tx.send(request("ivo://a/1", &seen)));
        assert_eq!(*flag.0.lock().unwrap_or_else(PoisonError::into_inner), 1);
        assert!(tx.send(request("ivo://a/2", &seen)), "replaced");
        let Poll::Ready(r) = rx.poll_next(&mut cx) else {
            panic!("a request is waiting");
        };
        assert_eq!(r.config.local_ivo.as_deref(), Some("ivo://a/2"));
        assert!(rx.poll_next(&mut cx).is_pending(), "one at a time");
    }

    #[test]
    fn a_swap_is_seen_by_every_clone() {
        let a = Swap::new(1);
        let b = a.clone();
        b.store(2);
        assert_eq!(a.load(), 2);
    }
}
