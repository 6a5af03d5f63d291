//! `vtp-conformance`: runs the black-box VTP scenarios against a broker and prints the table.
//!
//! Exit status: 0 when every scenario that ran passed, 1 when one failed, 2 on a usage error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vtp_conformance::{Selection, Target, Timing, Tls, run, scenarios};

/// Black-box VTP conformance scenarios against a running broker (vtp, Comet, ...).
///
/// Every scenario names its source (VTP 2.0 section or Comet behaviour). Scenarios run in
/// parallel, each with its own connections and IVORNs. Slow scenarios (iamalive, author
/// deadline) take up to two iamalive periods or one deadline, plus slack: tell the suite the
/// broker's timers with --iamalive and --deadline. With --tls-ca every connection speaks TLS
/// and verifies the broker's certificate for the HOST given in --receive and --broadcast.
#[derive(Debug, Parser)]
#[command(name = "vtp-conformance", version)]
struct Args {
    /// The broker's receive (author submission) address.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "list", value_parser = addr)]
    receive: Option<HostPort>,
    /// The broker's broadcast (subscriber) address.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "list", value_parser = addr)]
    broadcast: Option<HostPort>,
    /// Speak TLS on both addresses, trusting only the CA certificates in this PEM file; the
    /// broker's certificate must be valid for each address's HOST (name or IP address).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The broker's iamalive period, in seconds.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = secs)]
    iamalive: Duration,
    /// The broker's author deadline (how long it keeps a silent author connection), in seconds.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = secs)]
    deadline: Duration,
    /// Extra time allowed for prompt replies and on top of every timer, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = secs)]
    slack: Duration,
    /// Do not run these scenarios.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    skip: Vec<String>,
    /// Run only these scenarios.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    only: Vec<String>,
    /// Skip the slow scenarios (those that wait for the iamalive period or author deadline).
    #[arg(long)]
    quick: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for s in scenarios() {
            let slow = if s.slow { " (slow)" } else { "" };
            println!("{}{slow}\n    {}\n    {}", s.name, s.source, s.description);
        }
        return ExitCode::SUCCESS;
    }
    let (Some(receive), Some(broadcast)) = (args.receive, args.broadcast) else {
        // clap enforces both unless --list.
        eprintln!("vtp-conformance: --receive and --broadcast are required");
        return ExitCode::from(2);
    };
    let mut skip = args.skip;
    if args.quick {
        skip.extend(
            scenarios()
                .iter()
                .filter(|s| s.slow)
                .map(|s| s.name.to_owned()),
        );
    }
    let selection = match Selection::new(&args.only, &skip) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vtp-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let mut target = Target::new(receive.addr, broadcast.addr).with_timing(Timing {
        iamalive: args.iamalive,
        deadline: args.deadline,
        slack: args.slack,
    });
    if let Some(ca) = &args.tls_ca {
        match Tls::from_ca_file(ca, &receive.host, &broadcast.host) {
            Ok(tls) => target = target.with_tls(tls),
            Err(e) => {
                eprintln!("vtp-conformance: --tls-ca: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let report = run(&target, &selection);
    println!("{report}");
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A `HOST:PORT` argument: the host as given (the name TLS verifies) and its address.
#[derive(Debug, Clone)]
struct HostPort {
    host: String,
    addr: SocketAddr,
}

/// `HOST:PORT`, resolved; the first address wins.
fn addr(s: &str) -> Result<HostPort, String> {
    let addr = s
        .to_socket_addrs()
        .map_err(|e| format!("`{s}` is not a HOST:PORT address: {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))?;
    // to_socket_addrs accepted it, so there is a `:PORT` to strip.
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h).to_owned();
    Ok(HostPort { host, addr })
}

/// A positive number of seconds, fractions allowed.
fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("`{s}`: give a positive number of seconds"))
    }
}
