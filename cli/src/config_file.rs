//! `vtp broker --config FILE`: a TOML file whose keys are the broker's flags.
//!
//! Every long flag of `vtp broker` is a key, spelled as the flag without its `--`
//! (`author-whitelist`, visible aliases such as `remote` too). A flag that takes one value takes
//! a string or an integer (`frame-limit = 1048576`, `local-ivo = "ivo://example.org/broker"`);
//! a repeatable flag takes an array (`receive = ["8098", "ssl:8198:..."]`), or one value; an
//! on/off flag takes a boolean (`print-event = true`); `verbose` takes a count.
//!
//! The file is turned into the flags it stands for, and those go through clap with the
//! command line: the same parser, the same checks and the same `BrokerArgs` as flags give. A
//! flag given on the command line wins: the file's key for it is left out (clap's
//! `value_source` tells which flags the command line gave). Each value is first checked on its
//! own with the flag's value parser, so a bad value is reported with its key and line; an
//! unknown key, or a value of the wrong kind, likewise.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::args::{BrokerArgs, Cli, Command, Common};

/// Largest configuration file read (1 MiB): a wrong path (a device, a log) must not hang or
/// exhaust the start or a reload.
pub(crate) const CONFIG_FILE_MAX: u64 = 1024 * 1024;

/// Keys that are flags but not settings.
const NOT_KEYS: &[&str] = &["help", "version", "config"];

/// The broker's arguments, and the options common to every command (`verbose`, `quiet`,
/// `runtime`), from `argv` (the whole command line, `vtp broker ...`) and the configuration
/// file `file`: the file's keys, except those of flags the command line gives.
///
/// # Errors
///
/// A message naming the file, and the key and line when one is at fault.
pub(crate) fn broker_args(argv: &[OsString], file: &Path) -> Result<(BrokerArgs, Common), String> {
    let text = read(file)?;
    let name = file.display().to_string();
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| clap_text(&e))?;
    let given = matches
        .subcommand_matches("broker")
        .ok_or("not a `vtp broker` command line")?;
    // The common options may come before the command (`vtp -v broker`) or after it.
    let on_command_line = |id: &str| {
        [&matches, given].iter().any(|m| {
            m.try_get_raw(id).is_ok_and(|v| v.is_some())
                && m.value_source(id) == Some(ValueSource::CommandLine)
        })
    };
    let mut combined = argv.to_vec();
    combined.extend(tokens(&text, &name, &on_command_line)?);
    let matches = Cli::command()
        .try_get_matches_from(&combined)
        .map_err(|e| format!("{name}: {}", clap_text(&e)))?;
    match Cli::from_arg_matches(&matches).map_err(|e| format!("{name}: {}", clap_text(&e)))? {
        Cli {
            command: Command::Broker(a),
            common,
        } => Ok((*a, common)),
        _ => Err("not a `vtp broker` command line".into()),
    }
}

/// The file's bytes as text, at most [`CONFIG_FILE_MAX`].
///
/// # Errors
///
/// The file cannot be read, is too large, or is not UTF-8.
pub(crate) fn read(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let name = file.display();
    let f = std::fs::File::open(file).map_err(|e| format!("{name}: cannot open: {e}"))?;
    let mut bytes = Vec::new();
    f.take(CONFIG_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    if bytes.len() as u64 > CONFIG_FILE_MAX {
        return Err(format!(
            "{name}: larger than {} KiB: not a vtp configuration file",
            CONFIG_FILE_MAX / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("{name}: not UTF-8 text: {e}"))
}

/// The `vtp broker` flags `text` stands for (`--key=value`, one per value), leaving out the
/// keys of the arguments for which `skip(id)` is true.
fn tokens(text: &str, name: &str, skip: &dyn Fn(&str) -> bool) -> Result<Vec<OsString>, String> {
    let table = DeTable::parse(text).map_err(|e| {
        let at = e.span().map(|s| line_of(text, s.start));
        let at = at.map_or_else(String::new, |l| format!(":{l}"));
        // The text the error points at, when it is a short piece of one line (a key).
        let what = e
            .span()
            .and_then(|s| text.get(s))
            .map(str::trim)
            .filter(|w| !w.is_empty() && w.len() <= 64 && !w.contains('\n'))
            .map_or_else(String::new, |w| format!(" `{w}`"));
        format!("{name}{at}: not valid TOML: {}{what}", e.message().trim())
    })?;
    let cmd = broker_command();
    let mut keys: Vec<_> = table.into_inner().into_iter().collect();
    keys.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (key, value) in keys {
        let at = format!("{name}:{}", line_of(text, key.span().start));
        let key = key.into_inner();
        let arg = find(&cmd, &key).ok_or_else(|| unknown(&cmd, &at, &key))?;
        if skip(arg.get_id().as_str()) {
            continue;
        }
        let flag = arg.get_long().unwrap_or(&key).to_owned();
        let line = |v: &Spanned<DeValue<'_>>| format!("{name}:{}", line_of(text, v.span().start));
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value.get_ref() {
                DeValue::Boolean(on) => {
                    if *on == matches!(arg.get_action(), ArgAction::SetTrue) {
                        out.push(OsString::from(format!("--{flag}")));
                    }
                }
                _ => return Err(format!("{at}: `{key}` takes true or false")),
            },
            ArgAction::Count => {
                let n = match value.get_ref() {
                    DeValue::Integer(_) => scalar(value.get_ref()).and_then(|s| s.parse().ok()),
                    _ => None,
                }
                .filter(|n: &u8| *n <= 3);
                let Some(n) = n else {
                    return Err(format!("{at}: `{key}` takes a count from 0 to 3"));
                };
                out.extend((0..n).map(|_| OsString::from(format!("--{flag}"))));
            }
            ArgAction::Append => {
                let values: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
                    DeValue::Array(items) => items.iter().collect(),
                    _ => vec![&value],
                };
                for v in values {
                    let text = scalar(v.get_ref()).ok_or_else(|| {
                        format!(
                            "{}: `{key}` takes strings or integers (an array of them), not {}",
                            line(v),
                            kind(v.get_ref())
                        )
                    })?;
                    check(arg, &key, &text, &line(v))?;
                    meaning(arg, &text).map_err(|e| format!("{}: `{key}`: {e}", line(v)))?;
                    out.push(OsString::from(format!("--{flag}={text}")));
                }
            }
            _ => {
                let text = scalar(value.get_ref()).ok_or_else(|| {
                    format!(
                        "{}: `{key}` takes one string or integer, not {}",
                        line(&value),
                        kind(value.get_ref())
                    )
                })?;
                check(arg, &key, &text, &line(&value))?;
                meaning(arg, &text).map_err(|e| format!("{}: `{key}`: {e}", line(&value)))?;
                out.push(OsString::from(format!("--{flag}={text}")));
            }
        }
    }
    Ok(out)
}

/// `vtp broker` as clap sees it (global flags included).
pub(crate) fn broker_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand("broker")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("broker"))
}

/// The keys a configuration file may hold: every long flag of `vtp broker` but help, version
/// and config, with their visible aliases.
pub(crate) fn keys() -> Vec<String> {
    let cmd = broker_command();
    let mut keys = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if NOT_KEYS.contains(&long) {
            continue;
        }
        keys.push(long.to_owned());
        for alias in arg.get_visible_aliases().into_iter().flatten() {
            keys.push(alias.to_owned());
        }
    }
    keys
}

/// The argument `key` sets.
fn find<'a>(cmd: &'a clap::Command, key: &str) -> Option<&'a Arg> {
    if NOT_KEYS.contains(&key) {
        return None;
    }
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(key)
            || a.get_visible_aliases()
                .into_iter()
                .flatten()
                .any(|x| x == key)
    })
}

/// The error for an unknown key, with the nearest key when one is close.
fn unknown(cmd: &clap::Command, at: &str, key: &str) -> String {
    if key == "config" {
        return format!("{at}: `config` cannot be set in a configuration file");
    }
    let mut msg = format!("{at}: unknown key `{key}`");
    let nearest = keys()
        .into_iter()
        .map(|k| (distance(&k, key), k))
        .min()
        .filter(|(d, _)| *d <= 2 || (*d == 3 && key.len() >= 8));
    match nearest {
        Some((_, k)) => {
            let _ = write!(msg, " (did you mean `{k}`?)");
        }
        None => {
            let _ = write!(
                msg,
                "; the keys are the flags of `vtp broker` ({} --help)",
                cmd.get_name()
            );
        }
    }
    msg
}

/// Runs `text` through the argument's own value parser, as clap would on the command line
/// (alone: the checks between flags come when the whole command line is parsed).
fn check(arg: &Arg, key: &str, text: &str, at: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or(key);
    let alone = arg
        .clone()
        .required(false)
        .requires(clap::builder::Resettable::<clap::Id>::Reset);
    clap::Command::new("vtp")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={text}")])
        .map(drop)
        .map_err(|e| format!("{at}: `{key}`: {}", clap_text(&e)))
}

/// Checks what `vtp broker` makes of a value beyond its syntax for the flag (an endpoint, a
/// network, an identity, an IVOID, a filter), so that a bad one is reported with its line; the
/// same checks run again when the broker builds its configuration.
fn meaning(arg: &Arg, text: &str) -> Result<(), String> {
    use vtp_core::endpoint::{DialAddr, ListenEndpoint, PORT_SUBSCRIBE};
    match arg.get_id().as_str() {
        "receive" | "broadcast" if !text.is_empty() => ListenEndpoint::parse(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        "subscribe" => DialAddr::parse(text, PORT_SUBSCRIBE)
            .map(drop)
            .map_err(|e| e.to_string()),
        "author_whitelist" | "subscriber_whitelist" => {
            vtp_core::whitelist::Whitelist::parse_list(text)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        "author_identity" | "subscriber_identity" => vtp_core::identity::IdentityRule::parse(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        "local_ivo" => vtp_core::ivoid::Ivoid::parse(text)
            .map(drop)
            .map_err(|e| format!("invalid IVOID {text:?}: {e}")),
        "filter" => crate::checked_filters(&[text.to_owned()])
            .map(drop)
            .map_err(|crate::Fail(_, m)| m),
        _ => Ok(()),
    }
}

/// A string, integer or boolean as the flag's text; `None` for other kinds.
fn scalar(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// clap's message on one line, without its `error: ` prefix and usage.
fn clap_text(e: &clap::Error) -> String {
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let first = first.join(" ");
    first.strip_prefix("error: ").unwrap_or(&first).to_owned()
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::args::Runtime;
    use clap::Parser;

    /// `dist/vtp.toml`, the example shipped.
    fn example() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/vtp.toml");
        std::fs::read_to_string(path).unwrap()
    }

    /// The example with its commented-out keys (`# key = value`) set.
    fn example_uncommented() -> String {
        example()
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| keys().iter().any(|x| x == k)) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A file in a fresh directory, removed when dropped.
    struct File(PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "vtp-config-{}-{name}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("vtp.toml");
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    use std::path::PathBuf;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn load(text: &str, flags: &[&str]) -> Result<(BrokerArgs, Common), String> {
        let file = File::new("load", text);
        let mut args = vec!["vtp", "broker", "--config"];
        let path = file.0.to_str().unwrap().to_owned();
        args.push(&path);
        args.extend(flags);
        broker_args(&argv(&args), &file.0).map_err(|e| e.replace(&path, "FILE"))
    }

    fn from_flags(flags: &[&str]) -> (BrokerArgs, Common) {
        let args = [&["vtp", "broker"], flags].concat();
        let cli = Cli::try_parse_from(argv(&args)).unwrap();
        match cli.command {
            Command::Broker(a) => (*a, cli.common),
            _ => unreachable!(),
        }
    }

    /// The node configuration `vtp broker` builds from `a` (without the file-descriptor plan),
    /// as text: `Config` has no `PartialEq`, its `Debug` shows every field.
    fn config_of(a: &BrokerArgs) -> String {
        let plan = crate::broker_plan(a, false)
            .map_err(|crate::Fail(_, m)| m)
            .unwrap();
        format!("{:?} {:?} {:?}", plan.config, plan.listeners, plan.options)
    }

    /// Every field of the arguments but `config` (the file's own name).
    fn args_of((a, common): &(BrokerArgs, Common)) -> String {
        let mut a = a.clone();
        a.config = None;
        format!("{a:?} {common:?}")
    }

    #[test]
    fn every_broker_flag_is_a_key_and_every_key_is_in_the_example() {
        let cmd = broker_command();
        let text = example();
        let mut flags = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else {
                panic!("--{id} has no long name: it could not be a key");
            };
            if NOT_KEYS.contains(&long) {
                continue;
            }
            flags += 1;
            assert!(keys().iter().any(|k| k == long), "{long} is not a key");
            assert!(
                text.lines().any(|l| {
                    let l = l.strip_prefix("# ").unwrap_or(l);
                    l.starts_with(&format!("{long} = "))
                }),
                "dist/vtp.toml has no `{long} = ` line (set or commented out)"
            );
        }
        assert!(flags > 40, "{flags}: the broker's flags were not all seen");
        // Each of them parses, set or not: the example with every key set is a valid file.
        let (all, _) = load(&example_uncommented(), &[]).unwrap();
        assert!(all.max_connections.is_some() && all.tls.tls_ca.is_some());
        // And it checks, with its defaults, like the broker would start.
        let (shipped, _) = load(&example(), &[]).unwrap();
        config_of(&shipped);
    }

    #[test]
    fn a_file_equivalent_to_a_flag_set_gives_the_same_arguments_and_config() {
        let flags = [
            "--receive=127.0.0.1:0",
            "--receive",
            "unix:/tmp/vtp-config-test.sock",
            "--broadcast",
            "[::1]:0",
            "--local-ivo",
            "ivo://example.org/broker",
            "--author-whitelist",
            "10.0.0.0/8",
            "192.168.0.0/255.255.0.0",
            "--subscriber-whitelist=::1/128",
            "--subscribe",
            "upstream.example.org",
            "--remote",
            "127.0.0.1:9",
            "--iamalive-interval",
            "30",
            "--broadcast-test-interval",
            "0",
            "--duplicate-reply",
            "nak",
            "--subscriber-nak=disconnect",
            "--accept-versions",
            "any",
            "--schema",
            "off",
            "--durability",
            "async",
            "--frame-limit",
            "65536",
            "--max-connections",
            "100",
            "--author-connections-per-address",
            "3",
            "--outbox-bytes",
            "1000",
            "--seen-max",
            "1000",
            "--seen-retention",
            "2",
            "--tls-handshake-timeout",
            "5",
            "--print-event",
            "--cmd",
            "cat -u",
            "--cmd-timeout",
            "5",
            "--filter",
            "//Param[@name='x']",
            "-vv",
            "--runtime",
            "mio",
        ];
        let file = r#"
            receive = ["127.0.0.1:0", "unix:/tmp/vtp-config-test.sock"]
            broadcast = "[::1]:0"
            local-ivo = "ivo://example.org/broker"
            author-whitelist = ["10.0.0.0/8", "192.168.0.0/255.255.0.0"]
            subscriber-whitelist = ["::1/128"]
            subscribe = ["upstream.example.org"]
            remote = "127.0.0.1:9"
            iamalive-interval = 30
            broadcast-test-interval = 0
            duplicate-reply = "nak"
            subscriber-nak = "disconnect"
            accept-versions = "any"
            schema = "off"
            durability = "async"
            frame-limit = 0x10000
            max-connections = 100
            author-connections-per-address = 3
            outbox-bytes = 1_000
            seen-max = 1000
            seen-retention = 2
            tls-handshake-timeout = 5
            print-event = true
            save-event = false
            cmd = ["cat -u"]
            cmd-timeout = 5
            filter = ["//Param[@name='x']"]
            verbose = 2
            runtime = "mio"
        "#;
        let by_flags = from_flags(&flags);
        let by_file = load(file, &[]).unwrap();
        assert_eq!(args_of(&by_file), args_of(&by_flags));
        assert_eq!(config_of(&by_file.0), config_of(&by_flags.0));
        assert_eq!(by_file.1.runtime, Runtime::Mio);
    }

    #[test]
    fn flags_on_the_command_line_win_over_the_file() {
        let file = r#"
            local-ivo = "ivo://example.org/file"
            receive = ["8098", "8198"]
            author-whitelist = ["10.0.0.0/8"]
            frame-limit = 1000
            quiet = true
        "#;
        let (a, common) = load(
            file,
            &["--receive", "127.0.0.1:0", "--frame-limit", "2000", "-v"],
        )
        .unwrap();
        assert_eq!(a.receive, ["127.0.0.1:0"], "the flag replaces the array");
        assert_eq!(a.frame_limit, 2000);
        assert_eq!(a.author_whitelist, ["10.0.0.0/8"], "from the file");
        assert_eq!(a.local_ivo.as_deref(), Some("ivo://example.org/file"));
        assert_eq!(common.verbose, 1);
        assert!(
            common.quiet,
            "quiet from the file, -v from the command line"
        );
    }

    #[test]
    fn a_common_option_before_the_command_wins_over_the_file_too() {
        let file = File::new(
            "before",
            "local-ivo = \"ivo://example.org/b\"\nreceive = [\"8098\"]\nverbose = 2\nquiet = true\nruntime = \"mio\"\n",
        );
        let path = file.0.to_str().unwrap();
        let args = argv(&["vtp", "-v", "--runtime", "smol", "broker", "--config", path]);
        let (_, common) = broker_args(&args, &file.0).unwrap();
        assert_eq!(common.verbose, 1);
        assert!(common.quiet, "from the file");
        assert_eq!(common.runtime, Runtime::Smol);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_line() {
        let cases: &[(&str, &str)] = &[
            (
                "local-ivo = \"ivo://example.org/b\"\nrecieve = [\"8098\"]\n",
                "FILE:2: unknown key `recieve` (did you mean `receive`?)",
            ),
            (
                "\n\nfrobnicate = 1\n",
                "FILE:3: unknown key `frobnicate`; the keys are the flags of `vtp broker`",
            ),
            (
                "frame-limit = 1\nseen-retention = 0\n",
                "FILE:2: `seen-retention`: invalid value '0' for '--seen-retention <DAYS>'",
            ),
            (
                "duplicate-reply = \"maybe\"",
                "FILE:1: `duplicate-reply`: invalid value 'maybe'",
            ),
            (
                "receive = [\n  \"8098\",\n  1.5,\n]",
                "FILE:3: `receive` takes strings or integers (an array of them), not a float",
            ),
            (
                "frame-limit = [1, 2]",
                "FILE:1: `frame-limit` takes one string or integer, not an array",
            ),
            (
                "print-event = \"yes\"",
                "FILE:1: `print-event` takes true or false",
            ),
            ("verbose = 9", "FILE:1: `verbose` takes a count from 0 to 3"),
            ("config = \"other.toml\"", "FILE:1: `config` cannot be set"),
            ("[broker]\nreceive = 1", "FILE:1: unknown key `broker`"),
            ("receive = [\"1\"\n", "FILE:1: not valid TOML"),
        ];
        for (text, want) in cases {
            let err = load(text, &[]).unwrap_err();
            assert!(err.starts_with(want), "{text:?}:\n got {err}\nwant {want}");
        }
    }

    #[test]
    fn a_file_over_one_mib_is_refused_before_it_is_parsed() {
        let big = format!("# {}\n", "x".repeat(CONFIG_FILE_MAX as usize));
        let err = load(&big, &[]).unwrap_err();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
    }
}
