//! `vtp`: broker, author (`send`) and subscriber (`listen`) on the vtp sans-IO core.
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate is the top layer: it parses options into the core's `Config`, picks a runtime and
//! wires the host's effects (store, handlers, logging); nothing depends on it.

mod archive;
mod args;
mod banner;
mod catchup;
mod config_file;
mod kafka;
mod ops;
mod reload;
mod signing;
mod units;

#[cfg(not(any(feature = "tokio", feature = "smol", feature = "mio")))]
compile_error!("vtp-cli needs at least one runtime feature: `tokio`, `smol` or `mio`");

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use vtp_core::config::{self, Upstream};
use vtp_core::endpoint::{DialAddr, ListenAddr, ListenEndpoint, PORT_SUBMIT, PORT_SUBSCRIBE};
#[cfg(feature = "xpath")]
use vtp_core::filter::XPathEngine;
use vtp_core::filter::{FilterEngine, NoFilterEngine};
use vtp_core::identity::IdentityRule;
use vtp_core::node::ConfigError;
use vtp_core::whitelist::{IpNet, Whitelist};
use vtp_core::{Config, Event, ListenerRole, Node};
use vtp_host::effects::{HostEffects, printable};
use vtp_host::fdlimit::{self, FdReserve};
use vtp_host::handlers::{self, Handler, Handlers};
use vtp_host::net::{Bound, Options};
use vtp_host::shutdown::Shutdown;
use vtp_host::store;

use args::{
    BrokerArgs, Cli, ClientTls, Command, Common, ConfigCommand, Handling, ListenArgs, LogFormat,
    Operations, Runtime, SendArgs,
};

/// Exit statuses of `vtp send` (and of every command for usage errors).
mod status {
    pub(crate) const NAK: u8 = 1;
    pub(crate) const USAGE: u8 = 2;
    pub(crate) const TIMEOUT: u8 = 3;
    pub(crate) const CONNECTION: u8 = 4;
    pub(crate) const RUNTIME: u8 = 5;
}

/// A failure with the exit status it maps to.
struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(status::RUNTIME, e.to_string())
    }
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail(status::USAGE, msg.into())
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    // With --config, the file's keys join the command line's flags (which win).
    if let Command::Broker(a) = &mut cli.command
        && let Some(file) = a.config.clone()
    {
        match config_file::broker_args(&argv, &file) {
            Ok((merged, common)) => {
                **a = merged;
                cli.common = common;
            }
            Err(msg) => {
                eprintln!("vtp: {msg}");
                return ExitCode::from(status::USAGE);
            }
        }
    }
    let runtime = cli.common.runtime;
    let result = match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        command => {
            init_logging(&cli.common);
            match command {
                Command::Broker(a) => broker(*a, cli.common, argv),
                Command::Send(a) => send(*a, runtime),
                Command::Listen(a) => listen(*a, runtime),
                Command::Config(ConfigCommand::Check { file }) => config_check(&file),
                Command::Completions { .. } | Command::Man => Ok(()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("vtp: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

/// `vtp completions SHELL`: the completion script on standard output.
fn completions(shell: clap_complete::Shell) -> Result<(), Fail> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics on a write error (a closed pipe).
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vtp", &mut out);
    match std::io::stdout().write_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `vtp man`: the manual page (roff) on standard output; it lists the subcommands, whose
/// options `vtp COMMAND --help` shows.
fn man() -> Result<(), Fail> {
    use clap::CommandFactory;
    use std::io::Write;
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    match std::io::stdout().write_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Help and version go to stdout as clap prints them; a bad argument gets one line naming it.
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // clap's first paragraph, on one line (a missing argument is listed on the next line).
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    // clap's suggestion ("tip: a similar argument exists: '--local-ivo'"), on the same line.
    let tips: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
        .collect();
    let tips = if tips.is_empty() {
        String::new()
    } else {
        format!("; {}", tips.join("; "))
    };
    eprintln!("vtp: {first}{tips} (see vtp --help)");
    ExitCode::from(status::USAGE)
}

/// Logs to stderr, as text or JSON (`--log-format`). `-v`/`-q` set the level;
/// `VTP_LOG=error|warn|info|debug|trace` overrides. The level can change later
/// ([`set_log_level`], a reload).
fn init_logging(c: &Common) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_level(c));
    let _ = LOG_LEVEL.set(handle);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match c.log_format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
        // One object per line; the fields (`message`, `conn`...) at the top level.
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .init(),
    }
    let env = std::env::var("VTP_LOG").ok();
    if let Some(v) = env.filter(|v| v.parse::<LevelFilter>().is_err()) {
        tracing::warn!("VTP_LOG={v:?} is not a level (error, warn, info, debug, trace); ignored");
    }
}

type LevelHandle = tracing_subscriber::reload::Handle<
    tracing_subscriber::filter::LevelFilter,
    tracing_subscriber::Registry,
>;

/// The running log level, set by [`init_logging`].
static LOG_LEVEL: OnceLock<LevelHandle> = OnceLock::new();

/// The level `-v`/`-q` ask for, or `VTP_LOG`'s when it is a level.
fn log_level(c: &Common) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    let env = std::env::var("VTP_LOG").ok();
    if let Some(Ok(l)) = env.as_deref().map(str::parse::<LevelFilter>) {
        return l;
    }
    match (c.quiet, c.verbose) {
        (true, _) => LevelFilter::WARN,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    }
}

/// Changes the log level from now on; returns the previous one.
fn set_log_level(
    level: tracing_subscriber::filter::LevelFilter,
) -> Option<tracing_subscriber::filter::LevelFilter> {
    let handle = LOG_LEVEL.get()?;
    let old = handle.clone_current();
    handle.modify(|l| *l = level).ok()?;
    old
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Jitter seed: differs between processes so that brokers restarted together do not redial in
/// lockstep.
fn seed() -> u64 {
    u64::from(std::process::id()) ^ unix_now().as_nanos() as u64
}

// ------------------------------------------------------------------------------------ broker

fn broker(a: BrokerArgs, common: Common, argv: Vec<OsString>) -> Result<(), Fail> {
    let plan = broker_plan(&a, true)?;
    // Per user, never a shared temp directory (see `store::default_dir`).
    let eventdb = match &a.eventdb {
        Some(dir) => dir.clone(),
        None => store::default_dir_from_env()?,
    };
    let runtime = common.runtime;
    let reload = a.config.clone().map(|file| reload::Setup {
        argv,
        file,
        started: a.clone(),
        started_common: common,
    });
    serve(
        plan.config,
        plan.listeners,
        plan.client_tls,
        &a.handling,
        Some(&eventdb),
        runtime,
        plan.options,
        plan.fds.as_ref(),
        reload,
        &a.ops,
        plan.kafka,
        plan.catch_up,
        plan.signing,
    )
}

/// What `vtp broker` runs with, from its arguments: everything checked at start but the
/// listeners' TLS files (loaded when they are bound) and the store.
struct BrokerPlan {
    config: Config,
    listeners: Vec<(ListenerRole, ListenEndpoint)>,
    client_tls: Option<vtp_host::transport::ClientTls>,
    options: Options,
    /// The file-descriptor budget (when asked for: it raises the soft limit).
    fds: Option<FdPlan>,
    /// The Kafka bridge, when a Kafka flag asks for it.
    kafka: Option<kafka::KafkaPlan>,
    /// The catch-ups, when `--catch-up` asks for them.
    catch_up: Option<catchup::CatchUpPlan>,
    /// The trusted keys and the signing key.
    signing: signing::Plan,
}

/// Builds and checks the broker's configuration from its arguments: endpoints, whitelists,
/// identities, filters and the client TLS files. With `fds`, raises the file-descriptor limit
/// and fits the connection cap under it.
fn broker_plan(a: &BrokerArgs, fds: bool) -> Result<BrokerPlan, Fail> {
    let listeners = listen_endpoints(a)?;
    if listeners.is_empty() && a.subscribe.is_empty() && !a.kafka.wanted() {
        return Err(usage(
            "nothing to do: give --receive, --broadcast and/or --subscribe HOST",
        ));
    }
    if !listeners.is_empty() && a.local_ivo.is_none() {
        return Err(usage(
            "--local-ivo is required with --receive or --broadcast, e.g. --local-ivo ivo://example.org/broker",
        ));
    }
    let mut config = Config::new(a.local_ivo.clone());
    config.author_whitelist = whitelist("--author-whitelist", &a.author_whitelist)?;
    config.subscriber_whitelist = whitelist("--subscriber-whitelist", &a.subscriber_whitelist)?;
    config.timing.test_event_interval =
        (a.broadcast_test_interval > 0).then(|| Duration::from_secs(a.broadcast_test_interval));
    config.timing.iamalive_period = Duration::from_secs(a.iamalive_interval);
    config.timing.intake_deadline = Duration::from_secs(a.receive_timeout.max(1));
    config.limits.frame_len_max = a.frame_limit;
    config.limits.author_connections_per_address = a.author_connections_per_address;
    config.limits.subscriber_connections_per_address = a.subscriber_connections_per_address;
    config.limits.violations_max = a.violations_max;
    config.limits.seen_entries_max = a.seen_max;
    config.timing.seen_retention = Duration::from_secs(a.seen_retention * 86_400);
    config.policy.duplicate_reply = match a.duplicate_reply {
        args::DuplicateReply::Ack => config::DuplicateReply::Ack,
        args::DuplicateReply::Nak => config::DuplicateReply::Nak,
    };
    config.policy.subscriber_nak = match a.subscriber_nak {
        args::SubscriberNak::Keep => config::SubscriberNak::Keep,
        args::SubscriberNak::Disconnect => config::SubscriberNak::Disconnect,
    };
    config.policy.accept_versions = match a.accept_versions {
        args::AcceptVersions::V2 => config::AcceptVersions::V2_0,
        args::AcceptVersions::Any => config::AcceptVersions::Any,
    };
    config.policy.schema = match a.schema {
        args::SchemaCheck::Off => config::SchemaCheck::Off,
        args::SchemaCheck::V2 => config::SchemaCheck::V2_0,
    };
    config.policy.durability = match a.durability {
        args::Durability::BeforeReply => config::Durability::BeforeReply,
        args::Durability::Async => config::Durability::Async,
    };
    for s in &a.subscribe {
        config.upstreams.push(Upstream {
            endpoints: vec![dial("--subscribe", s, PORT_SUBSCRIBE)?],
        });
    }
    config.filters = checked_filters(&a.handling.filter)?;
    let fds = fds.then(|| {
        FdPlan::new(
            a.max_connections,
            &listeners,
            config.upstreams.len(),
            a.ops.http.is_some(),
        )
    });
    config.limits.connections_max = match &fds {
        Some(fds) => fds.cap,
        None => a
            .max_connections
            .unwrap_or(config::Limits::default().connections_max),
    };
    config.author_identities = identities("--author-identity", &a.author_identity)?;
    config.subscriber_identities = identities("--subscriber-identity", &a.subscriber_identity)?;
    check_identity_listeners(&config, &listeners)?;
    config.timing.handshake_deadline = Duration::from_secs(a.tls_handshake_timeout);
    config.limits.handshakes_max = a.tls_handshakes_max;
    let mut options = Options::default();
    options.outbox.bytes_max = a.outbox_bytes;
    let client_tls = client_tls(&a.tls, &config.upstreams)?;
    let kafka = kafka::plan(&a.kafka, a.local_ivo.as_deref()).map_err(usage)?;
    let catch_up = catchup::plan(
        &a.catch_up,
        &a.subscribe,
        PORT_SUBSCRIBE,
        !config.filters.is_empty(),
        a.tls.tls_ca.as_deref(),
    )
    .map_err(usage)?;
    let signing = signing::plan(&a.signatures, &mut config).map_err(usage)?;
    Ok(BrokerPlan {
        config,
        listeners,
        client_tls,
        options,
        fds,
        kafka,
        catch_up,
        signing,
    })
}

/// The listening endpoints of `--receive` and `--broadcast`, in order.
fn listen_endpoints(a: &BrokerArgs) -> Result<Vec<(ListenerRole, ListenEndpoint)>, Fail> {
    let mut listeners = Vec::new();
    for (role, values, port, default, flag) in [
        (
            ListenerRole::Receive,
            &a.receive,
            a.receive_port,
            PORT_SUBMIT,
            "--receive",
        ),
        (
            ListenerRole::Broadcast,
            &a.broadcast,
            a.broadcast_port,
            PORT_SUBSCRIBE,
            "--broadcast",
        ),
    ] {
        if values.is_empty() && port.is_some() {
            return Err(usage(format!(
                "{flag}-port needs {flag}: write `{flag} --{}-port N` or `{flag} N`",
                &flag[2..]
            )));
        }
        for v in values {
            let endpoint = if v.is_empty() {
                ListenAddr::AnyTcp(port.unwrap_or(default)).into()
            } else {
                ListenEndpoint::parse(v).map_err(|e| usage(format!("{flag}: {e}")))?
            };
            listeners.push((role, endpoint));
        }
    }
    Ok(listeners)
}

/// The file-descriptor budget of a broker: the limits before and after raising the soft one,
/// and the connection cap per listener role that fits under it.
struct FdPlan {
    raised: fdlimit::Raised,
    reserve: FdReserve,
    /// Roles the broker serves (0, 1 or 2).
    roles: usize,
    /// Connections per role that fit under the limit.
    fits: usize,
    /// `--max-connections`, if given.
    flag: Option<usize>,
    /// The cap used: `flag` (default `Limits::default().connections_max`), at most `fits`.
    cap: usize,
}

impl FdPlan {
    /// Raises the soft file-descriptor limit to the hard one and fits `flag`
    /// (`--max-connections`) under it, once the broker's other descriptors are set aside
    /// (`http`: those of the HTTP endpoint too).
    fn new(
        flag: Option<usize>,
        listeners: &[(ListenerRole, ListenEndpoint)],
        upstreams: usize,
        http: bool,
    ) -> Self {
        let raised = fdlimit::raise_nofile();
        let reserve = FdReserve {
            // A bare port binds two sockets (IPv4 and IPv6).
            listeners: listeners
                .iter()
                .map(|(_, e)| {
                    if matches!(e.addr, ListenAddr::AnyTcp(_)) {
                        2
                    } else {
                        1
                    }
                })
                .sum(),
            upstreams,
            handler_workers: HANDLER_WORKERS,
            store: true,
            http,
        };
        let roles = [ListenerRole::Receive, ListenerRole::Broadcast]
            .into_iter()
            .filter(|role| listeners.iter().any(|(r, _)| r == role))
            .count();
        let fits = fdlimit::connection_cap(raised.after.soft, &reserve, roles);
        let default = vtp_core::config::Limits::default().connections_max;
        let cap = flag.unwrap_or(default).min(fits);
        Self {
            raised,
            reserve,
            roles,
            fits,
            flag,
            cap,
        }
    }

    /// Logs the limits and the caps at INFO; a limit that could not be raised, or a
    /// `--max-connections` that does not fit, at WARN.
    fn log(&self, limits: &vtp_core::config::Limits) {
        let (before, after) = (self.raised.before, self.raised.after);
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        if let Some(e) = &self.raised.error {
            tracing::warn!(
                "cannot raise the soft file-descriptor limit ({}) to the hard limit ({}): {e}",
                show(before.soft),
                show(before.hard)
            );
        }
        if after.soft == before.soft {
            tracing::info!(
                "file descriptors: soft limit {} (hard limit {})",
                show(after.soft),
                show(after.hard)
            );
        } else {
            tracing::info!(
                "file descriptors: soft limit raised from {} to {} (hard limit {})",
                show(before.soft),
                show(after.soft),
                show(after.hard)
            );
        }
        if let Some(n) = self.flag.filter(|n| *n > self.fits) {
            tracing::warn!(
                "--max-connections {n} does not fit the file-descriptor limit ({}, of which {} \
                 are set aside for listeners, upstreams, handlers and the store): using {}",
                show(after.soft),
                self.reserve.total(),
                self.fits
            );
        }
        if self.roles == 0 {
            return;
        }
        let fits = if self.fits == usize::MAX {
            "any number".to_owned()
        } else {
            self.fits.to_string()
        };
        tracing::info!(
            "connections: at most {cap} authors and {cap} subscribers at once ({fits} fit the \
             file-descriptor limit, {} descriptors set aside); at most {} authors and {} \
             subscribers per address",
            self.reserve.total(),
            limits.author_connections_per_address,
            limits.subscriber_connections_per_address,
            cap = self.cap,
        );
    }
}

/// Threads running the event handlers (each runs one handler call at a time).
const HANDLER_WORKERS: usize = 4;

/// `--author-identity` / `--subscriber-identity` values.
fn identities(flag: &str, values: &[String]) -> Result<Vec<IdentityRule>, Fail> {
    values
        .iter()
        .map(|v| IdentityRule::parse(v).map_err(|e| usage(format!("{flag}: {e}"))))
        .collect()
}

/// A role restricted to certificate identities can only be served on TLS listeners that ask
/// for client certificates: any other listener of that role would refuse every peer.
fn check_identity_listeners(
    config: &Config,
    listeners: &[(ListenerRole, ListenEndpoint)],
) -> Result<(), Fail> {
    for (role, ep) in listeners {
        let (rules, flag) = match role {
            ListenerRole::Receive => (&config.author_identities, "--author-identity"),
            ListenerRole::Broadcast => (&config.subscriber_identities, "--subscriber-identity"),
        };
        let asks_for_certificates = ep.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !rules.is_empty() && !asks_for_certificates {
            let what = if ep.tls.is_some() {
                "a TLS listener without clientCA= (it asks no client certificate)"
            } else {
                "a plain listener (no certificate can be presented on it)"
            };
            return Err(usage(format!(
                "{flag} is given, but {ep} is {what}: every {} on it would be refused; add \
                 :clientCA=CA.pem to it, or remove it",
                match role {
                    ListenerRole::Receive => "author",
                    ListenerRole::Broadcast => "subscriber",
                }
            )));
        }
    }
    Ok(())
}

/// The TLS configuration of outgoing connections, when any dial is `tls:`; the files are loaded
/// and checked now, so a bad one stops the start with its name.
fn client_tls(
    files: &ClientTls,
    upstreams: &[Upstream],
) -> Result<Option<vtp_host::transport::ClientTls>, Fail> {
    let needed = upstreams
        .iter()
        .flat_map(|u| &u.endpoints)
        .any(DialAddr::is_tls);
    client_tls_for(files, needed)
}

fn client_tls_for(
    files: &ClientTls,
    needed: bool,
) -> Result<Option<vtp_host::transport::ClientTls>, Fail> {
    let given = files.tls_ca.is_some() || files.tls_client_cert.is_some();
    if !needed {
        if given {
            tracing::warn!(
                "--tls-ca / --tls-client-cert are given but no endpoint is tls:HOST:PORT; they \
                 are not used"
            );
        }
        return Ok(None);
    }
    #[cfg(feature = "tls")]
    {
        let files = vtp_host::tls::ClientFiles {
            ca: files.tls_ca.clone(),
            cert: files.tls_client_cert.clone(),
            key: files.tls_client_key.clone(),
        };
        let (config, warnings) =
            vtp_host::tls::client_config(&files).map_err(|e| usage(e.to_string()))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(Some(config))
    }
    #[cfg(not(feature = "tls"))]
    Err(usage(
        "tls:HOST:PORT endpoints need a build with TLS (cargo feature `tls`)",
    ))
}

fn whitelist(flag: &str, values: &[String]) -> Result<Whitelist, Fail> {
    if values.is_empty() {
        return Ok(Whitelist::allow_all());
    }
    let mut nets: Vec<IpNet> = Vec::new();
    for v in values {
        let parsed = Whitelist::parse_list(v).map_err(|e| usage(format!("{flag}: {e}")))?;
        for n in &parsed {
            if n.had_host_bits() {
                tracing::warn!("{flag} {v}: host bits set; using {n}");
            }
        }
        nets.extend(parsed);
    }
    Ok(Whitelist::new(nets))
}

/// Parses a dial endpoint, applying the default port.
fn dial(flag: &str, s: &str, default_port: u16) -> Result<DialAddr, Fail> {
    DialAddr::parse(s, default_port).map_err(|e| usage(format!("{flag}: {e}")))
}

fn build_handlers(
    h: &Handling,
    default_print: bool,
    extra: &[Arc<dyn Handler>],
) -> Result<Option<Handlers>, Fail> {
    let mut list = handler_list(h, default_print, false)?;
    list.extend(extra.iter().cloned());
    if list.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        Handlers::new(list, HANDLER_WORKERS, 4096).with_queue_bytes(h.handler_queue_bytes),
    ))
}

/// The handlers `h` asks for, each checked (the programs of `--cmd` found, the directory of
/// `--save-event` safe). With `check_only`, a `--save-event-directory` that does not exist yet
/// is not created (and no handler is made for it): it would be at start.
fn handler_list(
    h: &Handling,
    default_print: bool,
    check_only: bool,
) -> Result<Vec<Arc<dyn Handler>>, Fail> {
    let mut list: Vec<Arc<dyn Handler>> = Vec::new();
    if h.print_event || (default_print && !h.save_event && h.cmd.is_empty()) {
        list.push(Arc::new(handlers::PrintEvent));
    }
    let saving = h.save_event || h.save_event_directory.is_some();
    if h.save_event_skip_test && !saving {
        return Err(usage(
            "--save-event-skip-test needs --save-event (or --save-event-directory DIR)",
        ));
    }
    if saving {
        let dir = match &h.save_event_directory {
            Some(d) => d.clone(),
            None => std::env::current_dir()?,
        };
        if check_only && std::fs::symlink_metadata(&dir).is_err() {
            println!(
                "note: --save-event-directory {} does not exist yet: vtp broker creates it",
                dir.display()
            );
        } else {
            let save = handlers::SaveEvent::new(&dir)
                .map_err(|e| usage(format!("--save-event-directory {}: {e}", dir.display())))?
                .skipping_tests(h.save_event_skip_test);
            list.push(Arc::new(save));
        }
    }
    for c in &h.cmd {
        let mut words = c.split_whitespace();
        let Some(prog) = words.next() else {
            return Err(usage("--cmd needs a program"));
        };
        let cmd = handlers::Command::new(prog, words.map(str::to_owned).collect())
            .map_err(|e| usage(format!("--cmd {c}: {e}")))?
            .with_timeout(Duration::from_secs(h.cmd_timeout));
        list.push(Arc::new(cmd));
    }
    if let Some(format) = h.stdout {
        let format = match format {
            args::StdoutFormat::Xml0 => handlers::StdoutFormat::Xml0,
            args::StdoutFormat::Jsonl => handlers::StdoutFormat::Jsonl,
        };
        list.push(Arc::new(
            handlers::Stdout::new(format).on_closed(stdout_closed::fire),
        ));
    }
    Ok(list)
}

/// `--stdout` lost its reader: the handler calls [`fire`](stdout_closed::fire), which stops
/// the node ([`serve`] arms it with the shutdown's trigger) and makes it exit with
/// [`status::RUNTIME`].
mod stdout_closed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use vtp_host::shutdown::Trigger;

    static CLOSED: AtomicBool = AtomicBool::new(false);
    static STOP: OnceLock<Trigger> = OnceLock::new();

    /// Standard output is closed: stop.
    pub(crate) fn fire() {
        CLOSED.store(true, Ordering::Release);
        if let Some(t) = STOP.get() {
            t.fire();
        }
    }

    /// From now on [`fire`] fires `trigger` (at once if it fired already).
    pub(crate) fn arm(trigger: Trigger) {
        let trigger = STOP.get_or_init(|| trigger);
        if closed() {
            trigger.fire();
        }
    }

    /// Whether [`fire`] was called.
    pub(crate) fn closed() -> bool {
        CLOSED.load(Ordering::Acquire)
    }
}

/// Builds the node and its effects (a broker's file-descriptor budget `fds` is logged once the
/// configuration is known valid), runs until SIGINT/SIGTERM, flushes the store. With `reload`
/// (a broker started with --config), SIGHUP reloads the configuration file.
#[allow(clippy::too_many_arguments)]
fn serve(
    config: Config,
    listeners: Vec<(ListenerRole, ListenEndpoint)>,
    client_tls: Option<vtp_host::transport::ClientTls>,
    handling: &Handling,
    eventdb: Option<&Path>,
    runtime: Runtime,
    options: Options,
    fds: Option<&FdPlan>,
    reload: Option<reload::Setup>,
    ops_args: &Operations,
    kafka: Option<kafka::KafkaPlan>,
    catch_up: Option<catchup::CatchUpPlan>,
    signing: signing::Plan,
) -> Result<(), Fail> {
    let mut catch_ups = catchup::CatchUps::new(catch_up, eventdb).map_err(usage)?;
    let mut bridge = kafka::Bridge::new(kafka)?;
    #[allow(unused_mut)]
    let mut bridged = bridge.handlers();
    // The archive is one more handler (kept across reloads like the bridge's).
    #[cfg(feature = "archive")]
    let archive = archive::open(ops_args, eventdb, &config)?;
    #[cfg(feature = "archive")]
    if let Some(a) = &archive {
        bridged.push(a.archive.handler());
    }
    #[cfg(not(feature = "archive"))]
    archive::refuse(ops_args, eventdb)?;
    let handlers = build_handlers(handling, false, &bridged)?;
    let handler_set = handlers.as_ref().map(Handlers::handler_set);
    let spool_bytes = match (&handlers, eventdb) {
        (Some(_), Some(_)) => handling.handler_spool_bytes,
        _ => 0,
    };
    let mut config = config;
    if spool_bytes > 0 {
        // Each delivery is spooled in the commit of its event's record, before the ack.
        config.policy.delivery_timing = config::DeliveryTiming::BeforeRecord;
    }
    let now = Instant::now();
    let (engine, filter_counters) = filter_engine();
    let mut node =
        Node::new(config, engine, seed(), now, unix_now()).map_err(|e| usage(config_error(&e)))?;
    signing.log(node.config());
    node.set_verifier(signing.verifier);
    node.set_signer(signing.signer);
    banner::Banner {
        config: node.config(),
        listeners: &listeners,
        handling,
        eventdb,
        spool_bytes,
        runtime,
        bridged: &bridged,
        kafka: bridge.banner(),
    }
    .log();
    if let Some(line) = catch_ups.banner() {
        tracing::info!("{line}");
    }
    if let Some(fds) = fds {
        fds.log(&node.config().limits);
    }
    let mut fx = HostEffects::new();
    if cfg!(feature = "signatures") {
        // Authors' signatures are verified beside the event loop, which goes on meanwhile
        // (whatever the policy now: a reload may turn verification on).
        let threads = vtp_host::verify::default_threads();
        let pool = vtp_host::verify::VerifyPool::spawn(threads).map_err(|e| {
            Fail(
                status::RUNTIME,
                format!("cannot start a verify thread: {e}"),
            )
        })?;
        node.set_verify_offload(vtp_host::verify::QUEUE_MAX + threads);
        fx = fx.with_verify_pool(pool);
        tracing::debug!("signatures of authors' submissions verified on {threads} thread(s)");
    }
    let mut store_probe = None;
    if let Some(dir) = eventdb {
        // The error says what is wrong: a lock held by another vtp, or the OS error.
        let opened = store::open_with_spool(&mut node, dir, now, spool_bytes)?;
        store_probe = Some(opened.worker.probe());
        fx = fx.with_store(opened.worker);
    }
    let handlers_probe = handlers.as_ref().map(Handlers::probe);
    if let Some(h) = handlers {
        fx = fx.with_handlers(h);
    }
    #[cfg(feature = "archive")]
    if let Some(a) = &archive {
        // Where each event came from, noted on the loop for the archive's handler.
        let (peers, deliveries) = (a.archive.sources(), a.archive.sources());
        fx = fx
            .on_event(move |e| peers.observe(e))
            .on_delivery(move |d| deliveries.delivered(d));
    }
    let mut bound = vtp_host::net::bind_endpoints(&listeners)?;
    if let Some(tls) = client_tls {
        bound = bound.with_client_tls(tls);
    }
    // External sources (the Kafka ingest, the catch-ups) share the loop's one inbox.
    let names: Vec<String> = bridge
        .source_name()
        .into_iter()
        .chain(catch_ups.source_names())
        .collect();
    if !names.is_empty() {
        let (inbox, feeders, commits) =
            vtp_host::external::channel(&names, node.config().limits.external_pending_max);
        let mut feeders = feeders.into_iter();
        if bridge.source_name().is_some()
            && let Some(feeder) = feeders.next()
        {
            bridge.start(feeder)?;
        }
        catch_ups.start(&mut feeders)?;
        bound = bound.with_externals(inbox);
        fx = fx.with_externals(commits);
    }
    if let Some(hook) = catch_ups.on_event() {
        fx = fx.on_event(hook);
    }
    // systemd's Type=notify: ready once bound and the seen-index is loaded.
    let notifier = vtp_host::notify::Notifier::from_env()
        .map_err(|e| Fail(status::RUNTIME, format!("$NOTIFY_SOCKET: {e}")))?
        .map(Arc::new);
    let watchdog = match &notifier {
        Some(_) => {
            vtp_host::notify::watchdog_interval_from_env().map_err(|e| Fail(status::RUNTIME, e))?
        }
        None => None,
    };
    let addrs = bound.addrs();
    let serving = if addrs.is_empty() {
        "subscribing".to_owned()
    } else {
        let list: Vec<String> = addrs
            .iter()
            .map(|(role, addr)| format!("{} on {addr}", role_name(*role)))
            .collect();
        format!("serving {}", list.join(", "))
    };
    // Signal handlers before the "listening" lines: once those are out, SIGHUP is handled.
    let shutdown = match reload {
        Some(setup) => {
            let (requester, reloads) = vtp_host::reload::channel();
            let mut reloader =
                reload::Reloader::new(setup, requester, &bound, handler_set, spool_bytes > 0)
                    .notifying(notifier.clone(), serving.clone())
                    .keeping(bridged);
            bound = bound.with_reloads(reloads);
            vtp_host::shutdown::on_signals_reloading(move || reloader.on_hup())?
        }
        None => vtp_host::shutdown::on_signals()?,
    };
    stdout_closed::arm(shutdown.trigger());
    for (role, addr) in &addrs {
        tracing::info!("listening for {} on {addr}", role_name(*role));
    }
    if let Some(n) = &notifier {
        n.ready(&serving);
    }
    let role = if fds.is_some() { "broker" } else { "listener" };
    let (ops, observer) = ops::start(
        ops_args,
        role,
        &bound,
        node.config(),
        (store_probe, handlers_probe),
        &filter_counters,
        &bridge,
    )?;
    catch_ups.attach_metrics(&ops.metrics);
    // systemd's WatchdogSec: pings while the loop turns, none once it stops turning.
    let watchdog = match (&notifier, watchdog) {
        (Some(n), Some(interval)) => {
            tracing::info!(
                "systemd watchdog: WATCHDOG=1 every {:.1} s while the event loop turns",
                (interval / 2).as_secs_f64()
            );
            Some(vtp_host::notify::Watchdog::spawn(
                Arc::clone(n),
                interval,
                ops.metrics.clone(),
            )?)
        }
        _ => None,
    };
    #[cfg(feature = "archive")]
    if let Some(a) = &archive {
        ops.metrics.attach_archive(vtp_host::ops::ArchiveAttached {
            probe: a.archive.probe(),
            readers: a.archive.readers(),
            access: a.access.clone(),
        });
        // The status page's latest events and sky map.
        ops.metrics.attach_recent_events(a.archive.readers());
    }
    let fx = fx.with_metrics(observer);
    let fx = run_node(runtime, node, bound, fx, shutdown, options)?;
    drop(watchdog);
    if let Some(n) = &notifier {
        n.stopping();
    }
    drop(ops);
    catch_ups.finish();
    fx.finish(Duration::from_secs(5));
    bridge.finish(Duration::from_secs(5));
    filter_counters.log();
    tracing::info!("stopped");
    if stdout_closed::closed() {
        // Logged at ERROR when it happened (the handler says why); only the status is left.
        return Err(Fail(status::RUNTIME, String::new()));
    }
    Ok(())
}

/// A configuration the node refuses, with the flag at fault when there is one.
fn config_error(e: &ConfigError) -> String {
    match e {
        ConfigError::IamalivePeriod { .. } => format!("--iamalive-interval: {e}"),
        ConfigError::LocalIvo { .. } => format!("--local-ivo: {e}"),
        ConfigError::FilterTooLong { .. } => format!("--filter: {e}"),
        e => e.to_string(),
    }
}

/// The engine that evaluates subscribers' filters: XPath 1.0 with Comet's meaning (feature
/// `xpath`, on by default), or none (every filter refused, visibly) in builds without it; with
/// a handle on its counters.
fn filter_engine() -> (Box<dyn FilterEngine + Send>, FilterCounters) {
    #[cfg(feature = "xpath")]
    {
        let engine = XPathEngine::default();
        let counters = FilterCounters(engine.stats());
        (Box::new(engine), counters)
    }
    #[cfg(not(feature = "xpath"))]
    (Box::new(NoFilterEngine), FilterCounters())
}

/// What the filter engine did, logged when the broker stops.
struct FilterCounters(#[cfg(feature = "xpath")] std::sync::Arc<vtp_core::filter::XPathStats>);

impl FilterCounters {
    /// Lets the metrics read the engine's counters (nothing without XPath).
    fn attach(&self, metrics: &vtp_host::ops::Metrics) {
        #[cfg(feature = "xpath")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            let s = std::sync::Arc::clone(&self.0);
            metrics.attach_filters(move || vtp_host::ops::FilterCounts {
                events: s.documents.load(Relaxed),
                events_refused: s.documents_refused.load(Relaxed),
                evaluations: s.evaluations.load(Relaxed),
                errors: s.errors.load(Relaxed),
                over_budget: s.over_budget.load(Relaxed),
            });
        }
        #[cfg(not(feature = "xpath"))]
        let _ = metrics;
    }

    /// One line when filters were evaluated; a warning when xee panicked (a bug to report).
    fn log(&self) {
        #[cfg(feature = "xpath")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &self.0;
            let documents = s.documents.load(Relaxed);
            let refused = s.documents_refused.load(Relaxed);
            if documents + refused == 0 {
                return;
            }
            tracing::info!(
                "filters: {documents} events evaluated, {refused} events refused (every filter \
                 false), {} evaluations, {} errors, {} over the cost budget",
                s.evaluations.load(Relaxed),
                s.errors.load(Relaxed),
                s.over_budget.load(Relaxed),
            );
            let panics = s.panics.load(Relaxed);
            if panics > 0 {
                tracing::warn!(
                    "filters: the XPath engine (xee) panicked {panics} times (caught; the filter \
                     or verdict was refused): please report it with the filters in use"
                );
            }
        }
    }
}

/// The node's own `--filter` expressions, each compiled by this build's engine: a syntax error
/// (or a build without XPath) stops start-up with a usage error naming the filter, as Comet
/// refuses to start on an invalid `--filter`.
fn checked_filters(filters: &[String]) -> Result<Vec<String>, Fail> {
    let (mut engine, _) = filter_engine();
    for f in filters {
        match engine.compile(f) {
            Ok(id) => engine.release(id),
            Err(e) => return Err(usage(format!("--filter {f:?}: {e}"))),
        }
    }
    Ok(filters.to_vec())
}

fn role_name(role: ListenerRole) -> &'static str {
    match role {
        ListenerRole::Receive => "authors",
        ListenerRole::Broadcast => "subscribers",
    }
}

/// Runs the node on the chosen runtime until `shutdown` completes; returns the effects.
fn run_node(
    runtime: Runtime,
    node: Node,
    bound: Bound,
    fx: HostEffects,
    shutdown: Shutdown,
    options: Options,
) -> std::io::Result<HostEffects> {
    match runtime {
        #[cfg(feature = "tokio")]
        Runtime::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(vtp_tokio::run(node, bound, fx, shutdown, options)),
        #[cfg(feature = "smol")]
        Runtime::Smol => vtp_smol::block_on_run(node, bound, fx, shutdown, options),
        #[cfg(feature = "mio")]
        Runtime::Mio => vtp_mio::run(node, bound, fx, shutdown, options),
    }
}

// -------------------------------------------------------------------------------------- send

fn send(a: SendArgs, runtime: Runtime) -> Result<(), Fail> {
    let target = match (&a.target, &a.host) {
        (Some(_), Some(_)) => return Err(usage("give either TARGET or --host, not both")),
        (Some(t), None) => {
            // `vtp send event.xml`: the file where the broker belongs.
            if std::path::Path::new(t).is_file() || (a.file.is_none() && t.ends_with(".xml")) {
                return Err(usage(format!(
                    "{t} looks like the event file, but TARGET (the broker) comes first: \
                     vtp send HOST[:PORT] {t} (or vtp send -h HOST -f {t})"
                )));
            }
            t.clone()
        }
        (None, Some(h)) => h.clone(),
        (None, None) => "localhost".to_owned(),
    };
    let mut endpoint = DialAddr::parse(&target, a.port.unwrap_or(PORT_SUBMIT))
        .map_err(|e| usage(format!("target: {e}")))?;
    if let (Some(p), DialAddr::Tcp { port, .. } | DialAddr::Tls { port, .. }) =
        (a.port, &mut endpoint)
    {
        *port = p;
    }
    let client_tls = client_tls_for(&a.tls, endpoint.is_tls())?;
    let file = match (&a.file, &a.file_opt) {
        (Some(_), Some(_)) => return Err(usage("give the event file once")),
        (f, g) => f.clone().or_else(|| g.clone()),
    };
    let payload = read_event(file.as_deref())?;
    let payload = signing::sign_submission(&a.sign, &payload)
        .map_err(|e| usage(format!("{}: {e}", describe(file.as_deref()))))?;
    let mut config = Config::default();
    let timeout = a.timeout;
    config.timing.receipt_timeout = Duration::from_secs(timeout);
    let now = Instant::now();
    let mut node = Node::new(config, Box::new(NoFilterEngine), seed(), now, unix_now())
        .map_err(|e| usage(e.to_string()))?;
    node.submit(endpoint.clone(), &payload, now)
        .map_err(|e| Fail(status::USAGE, format!("{}: {e}", describe(file.as_deref()))))?;

    let outcome: Arc<Mutex<Option<Result<(), Fail>>>> = Arc::default();
    let (trigger, done) = vtp_host::shutdown::pair();
    let o = outcome.clone();
    let fx = HostEffects::new().on_event(move |e| {
        let result = match e {
            Event::SubmissionAcked { .. } => Ok(()),
            Event::SubmissionNaked { reason, .. } => Err(Fail(
                status::NAK,
                format!(
                    "event refused by {target}: {}",
                    reason
                        .as_deref()
                        .map_or("(no reason given)".into(), printable)
                ),
            )),
            Event::SubmissionFailed { reason, .. } => {
                Err(submission_failed(&target, reason, timeout))
            }
            _ => return,
        };
        if let Ok(mut slot) = o.lock() {
            slot.get_or_insert(result);
        }
        trigger.fire();
    });
    let mut bound = vtp_host::net::bind(&[])?;
    if let Some(tls) = client_tls {
        bound = bound.with_client_tls(tls);
    }
    run_node(runtime, node, bound, fx, done, Options::default())?;
    let result = outcome
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or_else(|| Err(Fail(status::CONNECTION, "no receipt".into())));
    if result.is_ok() {
        tracing::info!("event acknowledged by {endpoint}");
    }
    result
}

/// The one line (and exit status) of a submission that got no receipt: the outcome is said
/// here only (the node's event is logged at DEBUG).
fn submission_failed(target: &str, reason: &vtp_core::CloseReason, timeout: u64) -> Fail {
    use vtp_core::CloseReason;
    match reason {
        CloseReason::ReceiptTimeout => Fail(
            status::TIMEOUT,
            format!("no receipt from {target} within {timeout} s (--timeout)"),
        ),
        CloseReason::PeerClosed => Fail(
            status::CONNECTION,
            format!("{target} closed the connection without a receipt"),
        ),
        reason => Fail(
            status::CONNECTION,
            format!("cannot submit to {target}: {reason}"),
        ),
    }
}

fn describe(file: Option<&Path>) -> String {
    file.map_or_else(|| "standard input".to_owned(), |p| p.display().to_string())
}

fn read_event(file: Option<&Path>) -> Result<Vec<u8>, Fail> {
    use std::io::Read;
    let mut buf = Vec::new();
    let r = match file {
        Some(p) => std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut buf)),
        None => std::io::stdin().read_to_end(&mut buf),
    };
    r.map_err(|e| usage(format!("cannot read {}: {e}", describe(file))))?;
    Ok(buf)
}

// ------------------------------------------------------------------------------------ listen

fn listen(a: ListenArgs, runtime: Runtime) -> Result<(), Fail> {
    let endpoints = a
        .hosts
        .iter()
        .map(|h| dial("HOST", h, PORT_SUBSCRIBE))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = Config::new(a.local_ivo.clone());
    config.upstreams = vec![Upstream { endpoints }];
    let client_tls = client_tls(&a.tls, &config.upstreams)?;
    config.filters = checked_filters(&a.handling.filter)?;
    config.timing.test_event_interval = None;
    config.timing.subscriber_silence = Duration::from_secs(a.silence_timeout.max(1));
    let signing = signing::plan(&a.signatures, &mut config).map_err(usage)?;
    let eventdb: Option<PathBuf> = a.eventdb.clone();
    // One upstream (the hosts are its failover addresses): a bare --catch-up URL pairs with it.
    let catch_up = catchup::plan(
        &a.catch_up,
        &[a.hosts.join(",")],
        PORT_SUBSCRIBE,
        !config.filters.is_empty(),
        a.tls.tls_ca.as_deref(),
    )
    .map_err(usage)?;
    if catch_up.is_some() && eventdb.is_none() {
        return Err(usage(catchup::NEEDS_EVENTDB));
    }
    let mut handling = a.handling;
    if !handling.print_event
        && !handling.save_event
        && handling.save_event_directory.is_none()
        && handling.cmd.is_empty()
        && handling.stdout.is_none()
    {
        // Like pygcn's default handler: show what arrives.
        handling.print_event = true;
    }
    serve(
        config,
        Vec::new(),
        client_tls,
        &handling,
        eventdb.as_deref(),
        runtime,
        Options::default(),
        None,
        None,
        &a.ops,
        None,
        catch_up,
        signing,
    )
}

// ------------------------------------------------------------------------------------ config

/// `vtp config check FILE`: everything `vtp broker --config FILE` checks before it binds and
/// opens its store.
fn config_check(file: &Path) -> Result<(), Fail> {
    let argv: Vec<OsString> = vec![
        "vtp".into(),
        "broker".into(),
        "--config".into(),
        file.into(),
    ];
    let (a, _) = config_file::broker_args(&argv, file).map_err(usage)?;
    let plan = broker_plan(&a, false)?;
    for (_, ep) in &plan.listeners {
        vtp_host::net::load_server_tls(ep).map_err(|e| usage(e.to_string()))?;
    }
    handler_list(&a.handling, false, true)?;
    let (engine, _) = filter_engine();
    Node::new(plan.config, engine, 0, Instant::now(), unix_now())
        .map_err(|e| usage(config_error(&e)))?;
    println!(
        "{}: OK ({} listeners, {} upstreams; the event database is not opened by the check)",
        file.display(),
        plan.listeners.len(),
        a.subscribe.len()
    );
    Ok(())
}
