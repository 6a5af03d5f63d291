//! `--catch-up [UPSTREAM=]URL`, `--catch-up-start` and `--catch-up-interval`: after an outage,
//! fetch what an upstream's archive holds and this node missed (vtp-host's `catchup`, feature `catchup`).
//!
//! Pairing with upstreams: `vtp listen` has one upstream (its hosts are failover addresses of
//! it), so one `--catch-up URL`. `vtp broker` takes one `--catch-up` per upstream it applies
//! to: a bare URL when there is exactly one `--subscribe`, else `UPSTREAM=URL`, UPSTREAM
//! written as in its `--subscribe` (`--catch-up broker.example.org=https://broker.example.org`).
//! Each catch-up's position is kept in the state directory (`--eventdb`) under its URL.

// The flags' doc comments are `--help` text, written for a terminal: a URL is not a link.
#![allow(rustdoc::bare_urls)]

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use vtp_core::endpoint::DialAddr;

/// The catch-up flags, shared by `vtp broker` and `vtp listen`.
#[derive(Debug, Clone, Args, Default, PartialEq, Eq)]
pub(crate) struct CatchUpArgs {
    /// After each (re)connection to the upstream, and at start, fetch the events it archived
    /// and this node missed from its HTTP API at URL (the upstream's --http address, e.g.
    /// http://127.0.0.1:8080 or https://broker.example.org) and handle them like live ones,
    /// each once (deduplicated by the seen-index). The last sequence number handled is kept in
    /// the --eventdb directory. With several --subscribe: UPSTREAM=URL, UPSTREAM as in its
    /// --subscribe. Repeatable (one per upstream).
    #[arg(long = "catch-up", value_name = "[UPSTREAM=]URL")]
    pub(crate) catch_up: Vec<String>,
    /// Where catch-up starts for a URL with no remembered sequence number (a first run): `now`
    /// (the archive's newest event: no history) or `all` (everything the archive still holds).
    #[arg(long, value_name = "FROM", value_enum, default_value_t = CatchUpStart::Now)]
    pub(crate) catch_up_start: CatchUpStart,
    /// Seconds between catch-up passes while connected (besides the one at each
    /// (re)connection): each fetches what is newer than the last sequence number handled
    /// (usually events that also came live, dropped as duplicates), keeping it current.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) catch_up_interval: u64,
}

/// `--catch-up-start`.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub(crate) enum CatchUpStart {
    /// From the archive's newest event on.
    #[default]
    Now,
    /// Everything the archive still holds.
    All,
}

/// The catch-ups to run: per upstream index, its URL.
#[derive(Debug, Clone)]
pub(crate) struct CatchUpPlan {
    pub(crate) urls: Vec<(usize, String)>,
    pub(crate) start: CatchUpStart,
    pub(crate) interval: u64,
    /// `--tls-ca`: the CA certificates an `https://` archive is verified against.
    #[cfg_attr(
        not(feature = "catchup"),
        allow(dead_code, reason = "read where catch-ups run (feature catchup)")
    )]
    pub(crate) tls_ca: Option<PathBuf>,
    /// The node's state directory (its `--eventdb`), set by [`CatchUps::new`].
    pub(crate) state_dir: PathBuf,
}

/// `vtp listen --catch-up` without `--eventdb`: the error that says why it is needed.
pub(crate) const NEEDS_EVENTDB: &str = "--catch-up needs --eventdb DIR: the seen-index that \
     drops events handled before, and the last sequence number handled, are kept there";

/// Pairs each `--catch-up` with an upstream (`subscribe`: the upstreams as written, one each),
/// checked: no `--filter` (the archive cannot apply XPath filters, so
/// catch-up would hand in events the filter keeps out), one URL per upstream.
///
/// # Errors
///
/// A message naming the flag and what to write instead.
pub(crate) fn plan(
    a: &CatchUpArgs,
    subscribe: &[String],
    default_port: u16,
    filters: bool,
    tls_ca: Option<&std::path::Path>,
) -> Result<Option<CatchUpPlan>, String> {
    if a.catch_up.is_empty() {
        return Ok(None);
    }
    if !cfg!(feature = "catchup") {
        return Err("--catch-up needs a build with catch-up (cargo feature `catchup`)".into());
    }
    if filters {
        return Err(
            "--catch-up cannot be combined with --filter: the archive API does not \
                    apply XPath filters, so catch-up would hand in events the filter keeps out"
                .into(),
        );
    }
    let mut urls: Vec<(usize, String)> = Vec::new();
    for v in &a.catch_up {
        let (upstream, url) = match v.split_once('=') {
            Some((up, url)) if !up.contains("://") => {
                let want = DialAddr::parse(up, default_port)
                    .map_err(|e| format!("--catch-up {v}: UPSTREAM {up:?}: {e}"))?;
                let i = subscribe
                    .iter()
                    .position(|s| {
                        s == up || DialAddr::parse(s, default_port).is_ok_and(|d| d == want)
                    })
                    .ok_or_else(|| {
                        format!(
                            "--catch-up {v}: {up} is not an upstream (give it as in its \
                             --subscribe: {})",
                            subscribe.join(", ")
                        )
                    })?;
                (i, url)
            }
            _ if subscribe.len() == 1 => (0, v.as_str()),
            _ => {
                return Err(format!(
                    "--catch-up {v}: there are {} upstreams; say which one it is for: \
                     --catch-up UPSTREAM=URL, UPSTREAM as in its --subscribe",
                    subscribe.len()
                ));
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--catch-up {v}: {url:?} is not a URL: give the upstream's HTTP API base, \
                 http://HOST:PORT or https://HOST[:PORT]"
            ));
        }
        let url = url.trim_end_matches('/').to_owned();
        if urls.iter().any(|(i, _)| *i == upstream) {
            return Err(format!(
                "--catch-up {v}: upstream {} has a catch-up URL already (one per upstream)",
                subscribe[upstream]
            ));
        }
        if urls.iter().any(|(_, u)| *u == url) {
            return Err(format!(
                "--catch-up {v}: {url} is given for two upstreams (one archive per upstream)"
            ));
        }
        urls.push((upstream, url));
    }
    Ok(Some(CatchUpPlan {
        urls,
        start: a.catch_up_start,
        interval: a.catch_up_interval,
        tls_ca: tls_ca.map(std::path::Path::to_path_buf),
        state_dir: PathBuf::new(),
    }))
}

/// The running catch-ups.
#[derive(Default)]
pub(crate) struct CatchUps {
    plan: Option<CatchUpPlan>,
    #[cfg(feature = "catchup")]
    running: Vec<(usize, String, vtp_host::catchup::CatchUp)>,
}

impl CatchUps {
    /// The catch-ups of `plan`, keeping their positions in `state_dir`.
    ///
    /// # Errors
    ///
    /// A plan without a state directory ([`NEEDS_EVENTDB`]).
    pub(crate) fn new(plan: Option<CatchUpPlan>, state_dir: Option<&Path>) -> Result<Self, String> {
        let plan = match (plan, state_dir) {
            (Some(mut p), Some(dir)) => {
                p.state_dir = dir.to_owned();
                Some(p)
            }
            (Some(_), None) => return Err(NEEDS_EVENTDB.into()),
            (None, _) => None,
        };
        Ok(Self {
            plan,
            #[cfg(feature = "catchup")]
            running: Vec::new(),
        })
    }

    /// The external sources' names, one per catch-up (`catch-up URL`).
    pub(crate) fn source_names(&self) -> Vec<String> {
        self.plan
            .iter()
            .flat_map(|p| &p.urls)
            .map(|(_, url)| format!("catch-up {url}"))
            .collect()
    }

    /// The banner's line, if any runs.
    pub(crate) fn banner(&self) -> Option<String> {
        let p = self.plan.as_ref()?;
        let urls: Vec<&str> = p.urls.iter().map(|(_, u)| u.as_str()).collect();
        Some(format!(
            "catch-up: from {} (start {} on a first run; a pass at each (re)connection and every \
             {} s; position kept in {})",
            urls.join(", "),
            match p.start {
                CatchUpStart::Now => "now",
                CatchUpStart::All => "all",
            },
            p.interval,
            p.state_dir.display()
        ))
    }

    /// Starts one reader per catch-up, each with the next of `feeders` (in
    /// [`source_names`](Self::source_names) order).
    ///
    /// # Errors
    ///
    /// A state file cannot be read, or a thread cannot be started.
    #[cfg(feature = "catchup")]
    pub(crate) fn start(
        &mut self,
        feeders: &mut impl Iterator<Item = vtp_host::external::Feeder>,
    ) -> std::io::Result<()> {
        use vtp_host::catchup::{CatchUp, Settings, Start};
        let Some(p) = &self.plan else {
            return Ok(());
        };
        for (upstream, url) in &p.urls {
            let Some(feeder) = feeders.next() else {
                break;
            };
            let settings = Settings {
                url: url.clone(),
                state_dir: p.state_dir.clone(),
                start: match p.start {
                    CatchUpStart::Now => Start::Now,
                    CatchUpStart::All => Start::All,
                },
                interval: std::time::Duration::from_secs(p.interval),
                tls_ca: p.tls_ca.clone(),
            };
            self.running
                .push((*upstream, url.clone(), CatchUp::spawn(settings, feeder)?));
        }
        Ok(())
    }

    #[cfg(not(feature = "catchup"))]
    pub(crate) fn start(
        &mut self,
        _feeders: &mut impl Iterator<Item = vtp_host::external::Feeder>,
    ) -> std::io::Result<()> {
        Ok(())
    }

    /// A hook for the node's events: a subscription coming up asks its upstream's catch-up
    /// for a pass. `None` when none runs.
    pub(crate) fn on_event(&self) -> Option<impl FnMut(&vtp_core::Event) + Send + 'static> {
        #[cfg(feature = "catchup")]
        {
            if self.running.is_empty() {
                return None;
            }
            let triggers: Vec<(usize, vtp_host::catchup::Trigger)> = self
                .running
                .iter()
                .map(|(i, _, c)| (*i, c.trigger()))
                .collect();
            Some(move |e: &vtp_core::Event| {
                if let vtp_core::Event::PeerUp {
                    role: vtp_core::ConnRole::Subscription,
                    upstream: Some(up),
                    ..
                } = e
                {
                    for (_, t) in triggers.iter().filter(|(i, _)| i == up) {
                        t.reconnected();
                    }
                }
            })
        }
        #[cfg(not(feature = "catchup"))]
        None::<fn(&vtp_core::Event)>
    }

    /// Lets the metrics read the catch-ups' counters (`vtp_catchup_*`).
    pub(crate) fn attach_metrics(&self, metrics: &vtp_host::ops::Metrics) {
        #[cfg(feature = "catchup")]
        if !self.running.is_empty() {
            use std::sync::atomic::Ordering::Relaxed;
            let list: Vec<(String, std::sync::Arc<vtp_host::catchup::Stats>)> = self
                .running
                .iter()
                .map(|(_, url, c)| (url.clone(), c.stats()))
                .collect();
            metrics.attach_catch_up(move || {
                list.iter()
                    .map(|(url, s)| vtp_host::ops::CatchUpSnapshot {
                        url: url.clone(),
                        events: s.events.load(Relaxed),
                        errors: s.errors.load(Relaxed),
                        gaps: s.gaps.load(Relaxed),
                        gap_events: s.gap_events.load(Relaxed),
                        position: s.position.load(Relaxed),
                    })
                    .collect()
            });
        }
        #[cfg(not(feature = "catchup"))]
        let _ = metrics;
    }

    /// Stops the readers (each writes the last position the node committed).
    pub(crate) fn finish(self) {
        #[cfg(feature = "catchup")]
        for (_, _, c) in self.running {
            c.stop();
        }
    }
}
