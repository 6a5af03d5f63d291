//! A runtime-neutral shutdown signal: a future any runtime can await (tokio, smol, or the mio
//! loop polling it with its own waker), completed by a [`Trigger`] or by SIGINT / SIGTERM.
//!
//! SIGHUP never kills the process (its default action would, losing queued work): with
//! [`on_signals_reloading`] it starts a configuration reload ([`crate::reload`]); with
//! [`on_signals`] (a program without a configuration file) it is logged and ignored.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct State {
    fired: bool,
    waker: Option<Waker>,
}

/// Completes the paired [`Shutdown`] future. Cloneable; firing twice is harmless.
#[derive(Debug, Clone)]
pub struct Trigger(Arc<Mutex<State>>);

/// Resolves once its [`Trigger`] fired.
#[derive(Debug)]
pub struct Shutdown(Arc<Mutex<State>>);

/// A new trigger and the future it completes.
pub fn pair() -> (Trigger, Shutdown) {
    let s = Arc::new(Mutex::new(State::default()));
    (Trigger(s.clone()), Shutdown(s))
}

impl Trigger {
    /// Completes the future (and wakes whoever awaits it).
    pub fn fire(&self) {
        let waker = match self.0.lock() {
            Ok(mut s) => {
                s.fired = true;
                s.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Shutdown {
    /// A trigger that completes this future (as SIGTERM would), for a part of the program
    /// that must stop it.
    pub fn trigger(&self) -> Trigger {
        Trigger(Arc::clone(&self.0))
    }
}

impl Future for Shutdown {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.lock() {
            Ok(s) if s.fired => Poll::Ready(()),
            Ok(mut s) => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            // A poisoned lock means a trigger panicked mid-fire: treat as fired.
            Err(_) => Poll::Ready(()),
        }
    }
}

/// A future that completes on the first SIGINT or SIGTERM (a thread waits for the signals).
/// SIGHUP does not stop it: each one is logged at WARN and ignored.
///
/// # Errors
///
/// If the signal handlers cannot be installed.
pub fn on_signals() -> std::io::Result<Shutdown> {
    signals(None)
}

/// As [`on_signals`], but each SIGHUP calls `on_hup` on the signal thread: a program that
/// reloads its configuration prepares the reload there and sends it to the loop
/// ([`crate::reload`]). Signals that arrive meanwhile wait for it to return.
///
/// # Errors
///
/// If the signal handlers cannot be installed.
pub fn on_signals_reloading(on_hup: impl FnMut() + Send + 'static) -> std::io::Result<Shutdown> {
    signals(Some(Box::new(on_hup)))
}

fn signals(mut on_hup: Option<Box<dyn FnMut() + Send>>) -> std::io::Result<Shutdown> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (trigger, shutdown) = pair();
    std::thread::Builder::new()
        .name("vtp-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    if let Some(reload) = on_hup.as_mut() {
                        reload();
                        continue;
                    }
                    tracing::warn!(
                        "SIGHUP: ignored (reload needs a configuration file: start vtp with \
                         --config FILE; SIGTERM stops it cleanly)"
                    );
                    continue;
                }
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                tracing::info!("{name}: shutting down");
                trigger.fire();
                break;
            }
        })?;
    Ok(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Mutex<bool>);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            if let Ok(mut f) = self.0.lock() {
                *f = true;
            }
        }
    }

    #[test]
    fn trigger_completes_and_wakes() {
        let (t, mut f) = pair();
        let flag = Arc::new(Flag(Mutex::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        t.clone().fire();
        assert!(*flag.0.lock().unwrap(), "woken");
        assert!(Pin::new(&mut f).poll(&mut cx).is_ready());
        t.fire();
    }
}
