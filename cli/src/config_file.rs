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

use crate::args::{BrokerArgs, Cli, Command};

/// Largest configuration file read (1 MiB): a wrong path (a device, a log) must not hang or
/// exhaust the start or a reload.
pub(crate) const CONFIG_FILE_MAX: u64 = 1024 * 1024;

/// Keys that are flags but not settings.
const NOT_KEYS: &[&str] = &["help", "version", "config"];

/// The broker's arguments from `argv` (the whole command line, `vtp broker ...`) and the
/// configuration file `file`: the file's keys, except those of flags the command line gives.
///
/// # Errors
///
/// A message naming the file, and the key and line when one is at fault.
pub(crate) fn broker_args(argv: &[OsString], file: &Path) -> Result<BrokerArgs, String> {
    let text = read(file)?;
    let name = file.display().to_string();
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| clap_text(&e))?;
    let given = matches
        .subcommand_matches("broker")
        .ok_or("not a `vtp broker` command line")?;
    let mut combined = argv.to_vec();
    combined.extend(tokens(&text, &name, &|id| {
        given.value_source(id) == Some(ValueSource::CommandLine)
    })?);
    let matches = Cli::command()
        .try_get_matches_from(&combined)
        .map_err(|e| format!("{name}: {}", clap_text(&e)))?;
    match Cli::from_arg_matches(&matches).map_err(|e| format!("{name}: {}", clap_text(&e)))? {
        Cli {
            command: Command::Broker(a),
        } => Ok(*a),
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
        format!("{name}{at}: not valid TOML: {}", e.message().trim())
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
        a.get_long() == Some(key) || a.get_visible_aliases().into_iter().flatten().any(|x| x == key)
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
    let alone = arg.clone().required(false).requires(clap::builder::Resettable::<clap::Id>::Reset);
    clap::Command::new("vtp")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={text}")])
        .map(drop)
        .map_err(|e| format!("{at}: `{key}`: {}", clap_text(&e)))
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
