//! Command-line options: Comet's, from both generations, so existing command lines work.

// The doc comments here are `--help` text, written for a terminal: `HOST[:PORT]` is not a
// link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vtp_core::config::Limits;
use vtp_core::outbox::OutboxLimits;
use vtp_host::{handlers, store};

/// vtp: a VOEvent Transport Protocol broker, author and subscriber (Comet- and pygcn-compatible).
#[derive(Debug, Parser)]
#[command(name = "vtp", version, propagate_version = true, after_help = ENVIRONMENT)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) common: Common,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a broker: receive events from authors, relay them to subscribers, subscribe upstream.
    Broker(Box<BrokerArgs>),
    /// Submit one event to a broker and wait for its receipt (like comet-sendvo).
    Send(Box<SendArgs>),
    /// Subscribe to brokers and handle the events they send (like pygcn's listener).
    Listen(Box<ListenArgs>),
    /// Print a shell completion script to standard output, e.g.
    /// `vtp completions bash > /etc/bash_completion.d/vtp`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output, e.g. `vtp man | man -l -`.
    Man,
    /// Work with `vtp broker` configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file without starting a broker.
    ///
    /// Checks what `vtp broker --config FILE` would check at start (keys and values,
    /// endpoints, whitelists, identities, filters, TLS and handler files), without binding a
    /// port or opening the event database. Exit status 0: it would start; 2: it would not (the
    /// first problem found is on standard error, with its line).
    Check {
        /// The configuration file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Which runtime runs the node (each is a cargo feature of vtp-cli).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Runtime {
    /// tokio.
    #[cfg(feature = "tokio")]
    Tokio,
    /// smol (async-io).
    #[cfg(feature = "smol")]
    Smol,
    /// One blocking mio poll loop, no async runtime.
    #[cfg(feature = "mio")]
    Mio,
}

impl Default for Runtime {
    fn default() -> Self {
        #[cfg(feature = "tokio")]
        return Self::Tokio;
        #[cfg(all(not(feature = "tokio"), feature = "smol"))]
        return Self::Smol;
        #[cfg(all(not(feature = "tokio"), not(feature = "smol"), feature = "mio"))]
        return Self::Mio;
    }
}

/// The environment variables `vtp --help` lists.
const ENVIRONMENT: &str = "Environment:
  VTP_LOG=LEVEL  log level: error, warn, info (the default), debug or trace; overrides -v
                 and -q. Logs go to standard error, one line per record (--log-format).";

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct Common {
    /// More logging (-v: debug, -vv: trace). VTP_LOG=LEVEL overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Less logging (warnings and errors only). VTP_LOG=LEVEL overrides it.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Which runtime drives the node.
    #[arg(long, value_enum, default_value_t = Runtime::default(), global = true)]
    pub(crate) runtime: Runtime,
    /// Log lines as text for people, or as JSON objects for machines (one per line, with
    /// `timestamp`, `level`, `message` and the line's fields such as `conn` and `class`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-01-02T03:04:05.678901Z  INFO subscriber 127.0.0.1:48272 connected conn=#3`.
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","message":"subscriber 127.0.0.1:48272 connected","conn":"#3"}`.
    Json,
}

/// TLS of outgoing connections (`tls:HOST:PORT`).
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct ClientTls {
    /// Verify TLS servers (tls:HOST:PORT) against the CA certificates in FILE (PEM) only,
    /// instead of the system's trust roots. The server's certificate must name HOST either way.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM, intermediates after it) to TLS servers, for
    /// brokers that require a certificate identity. Needs --tls-client-key.
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    pub(crate) tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    pub(crate) tls_client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct Handling {
    /// Log every accepted event.
    #[arg(long)]
    pub(crate) print_event: bool,
    /// Save every accepted event to a file named after its IVORN.
    #[arg(long)]
    pub(crate) save_event: bool,
    /// Directory for --save-event (default: the current directory; created if missing). Only
    /// this user may write to it.
    #[arg(long, value_name = "DIR")]
    pub(crate) save_event_directory: Option<PathBuf>,
    /// --save-event passes over events whose role is "test" (the other handlers and the
    /// subscribers still get them). Needs --save-event or --save-event-directory.
    #[arg(long)]
    pub(crate) save_event_skip_test: bool,
    /// Write every event to standard output, for a program reading it from a pipe (`vtp
    /// listen HOST --stdout jsonl | jq .ivorn`); logs stay on standard error. xml0: the
    /// event's exact bytes, then a NUL byte (`xargs -0`); jsonl: one JSON object per line,
    /// {"ivorn","role","received","xml"} ("xml_base64" instead of "xml" for an event not in
    /// UTF-8). When standard output closes (its reader exited) vtp logs it at ERROR and stops
    /// with exit status 5.
    #[arg(long, value_name = "FORMAT")]
    pub(crate) stdout: Option<StdoutFormat>,
    /// Run PROG (with arguments, split on whitespace; no shell) for every event, the event on
    /// its standard input. Repeatable.
    #[arg(long, value_name = "PROG")]
    pub(crate) cmd: Vec<String>,
    /// Kill a --cmd process still running after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) cmd_timeout: u64,
    /// Most event bytes held for slow handlers (--print-event, --save-event, --cmd): beyond
    /// it, an event is not handed to the handlers (subscribers still get it); each one is
    /// counted and logged at WARN with its IVORN. (One event is always taken when none is
    /// held.)
    #[arg(long, value_name = "BYTES", default_value_t = handlers::QUEUE_BYTES_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) handler_queue_bytes: usize,
    /// Most bytes of the on-disk handler spool in the --eventdb directory: events accepted
    /// but not yet handled by --print-event, --save-event and --cmd are kept there (written
    /// before their ack), so they are handled after a restart or a crash (handlers are
    /// at-least-once: an event may be handled twice after a crash), and events beyond
    /// --handler-queue-bytes wait there instead of being dropped. When it is full an event is
    /// only queued in memory (or, that full too, dropped: counted and logged with its IVORN).
    /// 0 turns it off (in-memory queue only). Needs --eventdb (always there for the broker).
    #[arg(long, value_name = "BYTES", default_value_t = store::spool::SPOOL_BYTES_DEFAULT)]
    pub(crate) handler_spool_bytes: u64,
    /// XPath filter sent upstream in the authenticate reply: the upstream broker sends only
    /// events matching at least one filter. Repeatable.
    #[arg(long, value_name = "XPATH")]
    pub(crate) filter: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BrokerArgs {
    /// Read settings from FILE (TOML): each key is a flag of this command without its
    /// leading --, e.g. `author-whitelist = ["10.0.0.0/8"]` (see README "Configuration
    /// file"). Flags given here override the file. SIGHUP re-reads it and applies what can
    /// change without a restart.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Accept event submissions from authors on ENDPOINT (default port 8098). ENDPOINT: PORT,
    /// HOST:PORT, [V6]:PORT, tcp:PORT[:interface=ADDR], unix:PATH, or TLS:
    /// ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem[:interface=ADDR][:extraCertChain=CHAIN.pem][:clientCA=CA.pem]
    /// (tls: is an alias; clientCA= requires client certificates issued by that CA).
    /// Repeatable: plain and TLS listeners can be mixed.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "")]
    pub(crate) receive: Vec<String>,
    /// Serve subscribers on ENDPOINT (default port 8099). Same forms as --receive. Repeatable.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "")]
    pub(crate) broadcast: Vec<String>,
    /// Port for a bare --receive (Comet 1.x/3.x style).
    #[arg(long, value_name = "PORT")]
    pub(crate) receive_port: Option<u16>,
    /// Port for a bare --broadcast (Comet 1.x/3.x style).
    #[arg(long, value_name = "PORT")]
    pub(crate) broadcast_port: Option<u16>,
    /// Subscribe to the broker at HOST[:PORT] (default port 8099) and relay its events;
    /// tls:HOST[:PORT] connects with TLS (see --tls-ca). Repeatable: one subscription each.
    #[arg(long, visible_alias = "remote", value_name = "HOST[:PORT]")]
    pub(crate) subscribe: Vec<String>,
    /// Only authors presenting a TLS client certificate with this identity may submit: a
    /// certificate name (subject CN or DNS name, any case) or sha256:HEX (the SHA-256 of the
    /// DER certificate, pinning one certificate). Repeatable. Needs TLS --receive listeners
    /// with clientCA=; checked in addition to --author-whitelist.
    #[arg(long, value_name = "ID")]
    pub(crate) author_identity: Vec<String>,
    /// Only subscribers presenting a TLS client certificate with this identity may subscribe
    /// (same forms as --author-identity; needs TLS --broadcast listeners with clientCA=).
    #[arg(long, value_name = "ID")]
    pub(crate) subscriber_identity: Vec<String>,
    /// Seconds a TLS connection may take to complete its handshake before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) tls_handshake_timeout: u64,
    /// Most TLS handshakes in progress at once; TLS connections beyond are closed at once.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) tls_handshakes_max: usize,
    /// This broker's IVOA identifier, e.g. ivo://example.org/broker. Required with --receive
    /// or --broadcast.
    #[arg(long, value_name = "IVOID")]
    pub(crate) local_ivo: Option<String>,
    /// Directory of the seen-event database; only this user may write to it. Default:
    /// $STATE_DIRECTORY (systemd), /var/lib/vtp for root, else $XDG_STATE_HOME/vtp or
    /// ~/.local/state/vtp (created with mode 0700).
    #[arg(long, value_name = "DIR")]
    pub(crate) eventdb: Option<PathBuf>,
    /// Networks allowed to submit (CIDR or ADDR/NETMASK; several per flag, comma or space
    /// separated; repeatable). Default: everyone (IPv4 and IPv6).
    #[arg(long, visible_alias = "receive-whitelist", value_name = "NET", num_args = 1..)]
    pub(crate) author_whitelist: Vec<String>,
    /// Networks allowed to subscribe (same forms). Default: everyone.
    #[arg(long, visible_alias = "broadcast-whitelist", value_name = "NET", num_args = 1..)]
    pub(crate) subscriber_whitelist: Vec<String>,
    /// Seconds between test events sent to subscribers; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub(crate) broadcast_test_interval: u64,
    /// Seconds an author connection may stay open, from accept (Comet: 20).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub(crate) receive_timeout: u64,
    /// Seconds between iamalive messages to subscribers (VTP requires at most 90).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) iamalive_interval: u64,
    /// Answer a duplicate submission with ack (VTP 2.0) or nak (Comet).
    #[arg(long, value_enum, default_value_t = DuplicateReply::Ack)]
    pub(crate) duplicate_reply: DuplicateReply,
    /// On a nak from a subscriber: keep the connection (VTP 2.0) or disconnect (Comet).
    #[arg(long, value_enum, default_value_t = SubscriberNak::Keep)]
    pub(crate) subscriber_nak: SubscriberNak,
    /// VOEvent versions accepted from authors.
    #[arg(long, value_enum, default_value_t = AcceptVersions::V2)]
    pub(crate) accept_versions: AcceptVersions,
    /// Schema check of author submissions: 2.0 validates VOEvent 2.0 packets against the
    /// VOEvent 2.0 schema and naks violations (like Comet); off accepts any well-formed event.
    #[arg(long, value_enum, default_value_t = SchemaCheck::V2)]
    pub(crate) schema: SchemaCheck,
    /// When acks and forwards of a new event go out: once its seen-index record is on disk
    /// (before-reply: a crash never makes the broker forward an event twice) or at once
    /// (async: a crash can lose the last records).
    #[arg(long, value_enum, default_value_t = Durability::BeforeReply)]
    pub(crate) durability: Durability,
    /// Largest frame accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub(crate) frame_limit: u32,
    /// Most author connections, and most subscriber connections, at once; more are accepted
    /// and closed at once. Default: 20,000, or fewer if that many do not fit the
    /// file-descriptor limit (the soft limit is raised to the hard one at start; both and the
    /// cap are logged). A value that does not fit is lowered, with a warning.
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) max_connections: Option<usize>,
    /// Most author connections open at once from one address (an IPv4 address or an IPv6
    /// /64; Unix-socket peers are not counted); more from that address are accepted and closed
    /// at once, while other addresses are served.
    #[arg(long, value_name = "N", default_value_t = Limits::default().author_connections_per_address,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) author_connections_per_address: usize,
    /// Most subscriber connections open at once from one address (as for
    /// --author-connections-per-address).
    #[arg(long, value_name = "N", default_value_t = Limits::default().subscriber_connections_per_address,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) subscriber_connections_per_address: usize,
    /// Most bytes queued for one connection beyond its socket buffer: a subscriber that lets
    /// more pile up is not reading, and is dropped. (At least one frame is always queued.)
    #[arg(long, value_name = "BYTES", default_value_t = OutboxLimits::default().bytes_max)]
    pub(crate) outbox_bytes: usize,
    /// Most protocol violations (unparsable frames, messages wrong for the role...) one
    /// subscriber or upstream may send within 10 s; one more and it is dropped. Only the first
    /// 5 of each 10 s are logged, then one line saying the rest are not.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) violations_max: u32,
    /// Most events the seen-index (duplicate detection) remembers. When full, each author
    /// network (IPv4 address, IPv6 /64) and each upstream keeps its fair share: an author over
    /// its share is naked ("seen-index quota for this source exhausted; try later"), one below
    /// it takes the place of the oldest entry of the largest source. Logged at 80 % and 100 %.
    #[arg(long, value_name = "ENTRIES", default_value_t = 500_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) seen_max: usize,
    /// Days an event stays in the seen-index: resubmitted or relayed within them, it is a
    /// duplicate and is not forwarded again.
    #[arg(long, value_name = "DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub(crate) seen_retention: u64,
    #[command(flatten)]
    pub(crate) handling: Handling,
    #[command(flatten)]
    pub(crate) tls: ClientTls,
    #[command(flatten)]
    pub(crate) ops: Operations,
    #[command(flatten)]
    pub(crate) kafka: crate::kafka::KafkaArgs,
    #[command(flatten)]
    pub(crate) catch_up: crate::catchup::CatchUpArgs,
    #[command(flatten)]
    pub(crate) signatures: crate::signing::SignatureArgs,
}

/// Metrics, health and status for operators.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct Operations {
    /// Serve GET /metrics (Prometheus), /healthz and /status (JSON) over HTTP on ADDR:PORT,
    /// e.g. 127.0.0.1:9108. Off by default. No authentication: /status names subscribers'
    /// addresses, so bind a loopback or otherwise private address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) http: Option<std::net::SocketAddr>,
    /// Seconds between the INFO stats lines (events in, forwarded, naks, duplicates,
    /// subscribers, upstreams up); 0 turns them off.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub(crate) stats_interval: u64,
    #[command(flatten)]
    pub(crate) archive: Archiving,
}

/// The event archive and its query API (on the --http endpoint).
#[derive(Debug, Clone, Args, Default, PartialEq, Eq)]
pub(crate) struct Archiving {
    /// Keep every accepted event in an SQLite archive in DIR (file archive.sqlite) and serve
    /// it on the --http endpoint (GET /api/events, /api/events/SEQ, /api/event?ivorn=). On by
    /// default when --http is given, in the --eventdb directory.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    pub(crate) archive: Option<PathBuf>,
    /// No archive, even with --http.
    #[arg(long)]
    pub(crate) no_archive: bool,
    /// Days an event stays in the archive; older ones are deleted (oldest first).
    #[arg(long, value_name = "DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub(crate) archive_max_age: u64,
    /// Most bytes the archive's database uses; beyond them the oldest events are deleted.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 30,
          value_parser = clap::value_parser!(u64).range(1_000_000..))]
    pub(crate) archive_max_bytes: u64,
    /// A file holding a bearer token: an HTTP request with `Authorization: Bearer TOKEN` may
    /// read the archive from any address (scripts). Without it, only addresses allowed by
    /// --subscriber-whitelist may.
    #[arg(long, value_name = "FILE")]
    pub(crate) http_token_file: Option<PathBuf>,
}

/// `--stdout`'s record formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StdoutFormat {
    /// The event's exact bytes, then a NUL byte.
    Xml0,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DuplicateReply {
    Ack,
    Nak,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SubscriberNak {
    Keep,
    Disconnect,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Durability {
    BeforeReply,
    Async,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AcceptVersions {
    /// VOEvent 2.0 only (like Comet's schema check).
    #[value(name = "2.0")]
    V2,
    /// 2.0, 1.1 and packets without namespace.
    Any,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SchemaCheck {
    /// No schema validation.
    Off,
    /// VOEvent 2.0 schema (Comet's VOEvent-v2.0.xsd); 1.1 and namespace-less packets, let
    /// through by --accept-versions any, are not checked.
    #[value(name = "2.0")]
    V2,
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub(crate) struct SendArgs {
    /// Broker to submit to: HOST[:PORT] (default port 8098), [V6]:PORT, tls:HOST[:PORT] or
    /// unix:PATH.
    #[arg(value_name = "TARGET")]
    pub(crate) target: Option<String>,
    /// Event file (default: standard input).
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Broker host (comet-sendvo style; -h as in comet-sendvo).
    #[arg(short = 'h', long, value_name = "HOST")]
    pub(crate) host: Option<String>,
    /// Broker port.
    #[arg(short, long, value_name = "PORT")]
    pub(crate) port: Option<u16>,
    /// Event file (comet-sendvo style).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file_opt: Option<PathBuf>,
    /// Seconds to wait for the receipt.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub(crate) timeout: u64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
    #[command(flatten)]
    pub(crate) tls: ClientTls,
    #[command(flatten)]
    pub(crate) sign: crate::signing::SignKeyArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Brokers to subscribe to, tried in turn (failover): HOST[:PORT] (default port 8099),
    /// [V6]:PORT, tls:HOST[:PORT] or unix:PATH.
    #[arg(value_name = "HOST[:PORT]", required = true)]
    pub(crate) hosts: Vec<String>,
    /// Our IVOA identifier, sent in iamalive and authenticate replies (optional).
    #[arg(long, value_name = "IVOID")]
    pub(crate) local_ivo: Option<String>,
    /// Directory of a persistent seen-event database (default: in memory only); only this
    /// user may write to it.
    #[arg(long, value_name = "DIR")]
    pub(crate) eventdb: Option<PathBuf>,
    /// Seconds without a valid message from the broker before reconnecting.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) silence_timeout: u64,
    #[command(flatten)]
    pub(crate) handling: Handling,
    #[command(flatten)]
    pub(crate) tls: ClientTls,
    #[command(flatten)]
    pub(crate) ops: Operations,
    #[command(flatten)]
    pub(crate) catch_up: crate::catchup::CatchUpArgs,
    #[command(flatten)]
    pub(crate) signatures: crate::signing::SignatureArgs,
}
