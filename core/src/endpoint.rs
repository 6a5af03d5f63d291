//! Endpoint strings, as Comet's command lines write them.
//!
//! Listening (`--receive`, `--broadcast`), in every form Comet's two generations accept:
//!
//! | form | meaning |
//! |---|---|
//! | `8098` | port 8098 on every interface (IPv4 and IPv6) |
//! | `127.0.0.1:8098`, `[::1]:8098`, `localhost:8098` | port on one address or host |
//! | `tcp:8098`, `tcp:8098:interface=127.0.0.1`, `tcp:port=8098:interface=::1` | Twisted's endpoint syntax |
//! | `unix:/run/vtp.sock`, `unix:path=/run/vtp.sock` | a Unix-domain socket |
//! | `ssl:8098:privateKey=KEY.pem:certKey=CERT.pem[:interface=ADDR][:extraCertChain=CHAIN.pem][:clientCA=CA.pem]` | TLS ([`ListenEndpoint`]); `tls:` is an alias |
//!
//! Dialling (`--subscribe`, `--remote`, `vtp listen`, `vtp send`): `HOST`, `HOST:PORT`,
//! `[V6]:PORT`, `tcp:HOST:PORT`, `tls:HOST:PORT` (or `ssl:`) or `unix:PATH`; the port defaults per use
//! ([`PORT_SUBSCRIBE`] to subscribe, [`PORT_SUBMIT`] to submit). The node dials only parsed
//! addresses ([`DialAddr`], its port resolved): a runtime never parses an endpoint string nor
//! knows a default port. Host names are resolved by the runtime, not here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// The port authors submit events to, a broker's `--receive` listener (Comet's default).
pub const PORT_SUBMIT: u16 = 8098;
/// The port subscribers connect to, a broker's `--broadcast` listener (Comet's default).
pub const PORT_SUBSCRIBE: u16 = 8099;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP port on every interface, IPv4 and IPv6.
    AnyTcp(u16),
    /// A TCP port on one address or host name.
    Tcp {
        /// Address or host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// Where to connect: a host and a port, or a Unix-domain socket. Every field is resolved
/// (the default port applied by [`DialAddr::parse`]), so dialling needs no further parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialAddr {
    /// A TCP host (name or address) and port.
    Tcp {
        /// Address or host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(PathBuf),
    /// A TCP host and port, spoken over TLS: the server's certificate is verified against the
    /// trust roots and must name `host`.
    Tls {
        /// Host name or address: what the server's certificate must name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// A listening endpoint: where, and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEndpoint {
    /// The address.
    pub addr: ListenAddr,
    /// TLS settings, for `ssl:`/`tls:` endpoints.
    pub tls: Option<TlsListen>,
}

/// The files of a TLS listener, as Twisted's `ssl:` endpoint names them. Loaded (and checked)
/// by the host at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    /// `privateKey=`: the server's private key (PEM).
    pub private_key: PathBuf,
    /// `certKey=`: the server's certificate (PEM; may hold the chain after it). Twisted's
    /// default when omitted: the `privateKey=` file, holding both.
    pub cert_key: PathBuf,
    /// `extraCertChain=`: intermediate certificates sent after the server's (PEM).
    pub extra_cert_chain: Option<PathBuf>,
    /// `clientCA=` (a vtp extension): require a client certificate that chains to one of
    /// the certificates in this PEM file (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A malformed endpoint string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {reason}")]
pub struct EndpointError {
    /// The string given.
    pub input: String,
    /// What is wrong, and what to write instead.
    pub reason: String,
}

fn err(input: &str, reason: &str) -> EndpointError {
    EndpointError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    }
}

fn port(input: &str, s: &str) -> Result<u16, EndpointError> {
    s.parse::<u16>()
        .map_err(|_| err(input, "the port must be a number from 0 to 65535"))
}

/// Splits `HOST:PORT` / `[V6]:PORT` / `HOST`; a bare IPv6 address is a host without port.
fn split_host_port<'a>(input: &str, s: &'a str) -> Result<(&'a str, Option<u16>), EndpointError> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(err(input, "missing `]` after the IPv6 address"));
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(port(input, p)?))),
                None => Err(err(input, "expected `:PORT` after `]`")),
            },
        };
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, p)) => Ok((host, Some(port(input, p)?))),
        None => Ok((s, None)),
    }
}

impl ListenAddr {
    /// Parses a listening endpoint.
    ///
    /// # Errors
    ///
    /// [`EndpointError`] naming the string and the problem.
    pub fn parse(input: &str) -> Result<Self, EndpointError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(err(input, "empty; give a PORT, HOST:PORT or unix:PATH"));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("path=").unwrap_or(path);
            let path = path.split(':').next().unwrap_or(path);
            if path.is_empty() {
                return Err(err(
                    input,
                    "unix: needs a socket path, e.g. unix:/run/vtp.sock",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            return Self::parse_twisted_tcp(input, rest);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Self::AnyTcp(port(input, s)?));
        }
        match split_host_port(input, s)? {
            (host, Some(port)) if !host.is_empty() => Ok(Self::Tcp {
                host: host.to_owned(),
                port,
            }),
            _ => Err(err(
                input,
                "expected PORT, HOST:PORT, [IPV6]:PORT, tcp:PORT[:interface=ADDR] or unix:PATH",
            )),
        }
    }

    fn parse_twisted_tcp(input: &str, rest: &str) -> Result<Self, EndpointError> {
        let mut port_num = None;
        let mut interface: Option<String> = None;
        // `interface=` may hold an IPv6 address with colons: it takes the rest of the string.
        let mut rest = rest;
        while !rest.is_empty() {
            if let Some(v) = rest.strip_prefix("interface=") {
                interface = Some(v.to_owned());
                break;
            }
            let (field, tail) = rest.split_once(':').unwrap_or((rest, ""));
            rest = tail;
            if let Some(v) = field.strip_prefix("port=") {
                port_num = Some(port(input, v)?);
            } else if let Some(v) = field.strip_prefix("backlog=") {
                v.parse::<u32>()
                    .map_err(|_| err(input, "backlog must be a number"))?;
            } else if port_num.is_none() && field.bytes().all(|b| b.is_ascii_digit()) {
                port_num = Some(port(input, field)?);
            } else {
                return Err(err(
                    input,
                    "expected tcp:PORT, tcp:PORT:interface=ADDR or tcp:port=PORT",
                ));
            }
        }
        let Some(port) = port_num else {
            return Err(err(input, "tcp: needs a port, e.g. tcp:8098"));
        };
        Ok(match interface {
            None => Self::AnyTcp(port),
            Some(i) if i.is_empty() => Self::AnyTcp(port),
            Some(host) => Self::Tcp {
                host: host.trim_matches(['[', ']']).to_owned(),
                port,
            },
        })
    }

    /// The IPv4 and IPv6 wildcard addresses, for [`ListenAddr::AnyTcp`].
    pub fn wildcards() -> [IpAddr; 2] {
        [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    }
}

impl ListenEndpoint {
    /// Parses a listening endpoint: any [`ListenAddr`] form (plain), or Twisted's TLS form
    /// `ssl:PORT:privateKey=KEY:certKey=CERT[:interface=ADDR][:extraCertChain=FILE][:clientCA=FILE]`
    /// (`tls:` is an alias; `port=PORT` may replace `PORT`; `\:` escapes a colon in a value,
    /// and an IPv6 `interface=` may also be written unescaped).
    ///
    /// # Errors
    ///
    /// [`EndpointError`] naming the string and the problem.
    pub fn parse(input: &str) -> Result<Self, EndpointError> {
        let s = input.trim();
        let Some(rest) = s.strip_prefix("ssl:").or_else(|| s.strip_prefix("tls:")) else {
            return Ok(Self {
                addr: ListenAddr::parse(input)?,
                tls: None,
            });
        };
        let fields = twisted_fields(rest);
        let mut port_num = None;
        let mut interface: Option<String> = None;
        let (mut key, mut cert, mut chain, mut ca) = (None, None, None, None);
        let mut i = 0;
        while i < fields.len() {
            let field = &fields[i];
            i += 1;
            let Some((name, value)) = field.split_once('=') else {
                if port_num.is_none()
                    && !field.is_empty()
                    && field.bytes().all(|b| b.is_ascii_digit())
                {
                    port_num = Some(port(input, field)?);
                    continue;
                }
                return Err(err(
                    input,
                    &format!(
                        "unexpected {field:?}: expected ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem[:interface=ADDR][:extraCertChain=CHAIN.pem][:clientCA=CA.pem]"
                    ),
                ));
            };
            let path = || {
                if value.is_empty() {
                    Err(err(input, &format!("{name}= needs a file path")))
                } else {
                    Ok(PathBuf::from(value))
                }
            };
            match name {
                "port" => port_num = Some(port(input, value)?),
                "interface" => {
                    // An unescaped IPv6 address was split at its colons: join the pieces back.
                    let mut v = value.to_owned();
                    while i < fields.len() && !fields[i].contains('=') {
                        v.push(':');
                        v.push_str(&fields[i]);
                        i += 1;
                    }
                    interface = Some(v);
                }
                "privateKey" => key = Some(path()?),
                "certKey" => cert = Some(path()?),
                "extraCertChain" => chain = Some(path()?),
                "clientCA" => ca = Some(path()?),
                "backlog" => {
                    value
                        .parse::<u32>()
                        .map_err(|_| err(input, "backlog must be a number"))?;
                }
                other => {
                    return Err(err(
                        input,
                        &format!(
                            "unknown option {other}=; TLS listeners take privateKey=, certKey=, interface=, extraCertChain= and clientCA="
                        ),
                    ));
                }
            }
        }
        let Some(port) = port_num else {
            return Err(err(
                input,
                "ssl: needs a port, e.g. ssl:8098:privateKey=KEY.pem:certKey=CERT.pem",
            ));
        };
        let Some(private_key) = key else {
            return Err(err(
                input,
                "ssl: needs privateKey=KEY.pem (and certKey=CERT.pem)",
            ));
        };
        let addr = match interface {
            None => ListenAddr::AnyTcp(port),
            Some(i) if i.is_empty() => ListenAddr::AnyTcp(port),
            Some(host) => ListenAddr::Tcp {
                host: host.trim_matches(['[', ']']).to_owned(),
                port,
            },
        };
        Ok(Self {
            addr,
            tls: Some(TlsListen {
                cert_key: cert.unwrap_or_else(|| private_key.clone()),
                private_key,
                extra_cert_chain: chain,
                client_ca: ca,
            }),
        })
    }
}

impl From<ListenAddr> for ListenEndpoint {
    fn from(addr: ListenAddr) -> Self {
        Self { addr, tls: None }
    }
}

impl fmt::Display for ListenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tls, &self.addr) {
            (None, a) => write!(f, "{a}"),
            (Some(_), ListenAddr::AnyTcp(p)) => write!(f, "tls:{p}"),
            (Some(_), a) => write!(f, "tls:{a}"),
        }
    }
}

/// Splits Twisted's `a:b\:c` at unescaped colons, unescaping `\:` and `\\`.
fn twisted_fields(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next()
                    && let Some(last) = out.last_mut()
                {
                    last.push(n);
                }
            }
            ':' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyTcp(p) => write!(f, "tcp:{p}"),
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl DialAddr {
    /// A TCP host (name or address) and port.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Self::Tcp {
            host: host.into(),
            port,
        }
    }

    /// Parses a dialling endpoint; `default_port` ([`PORT_SUBSCRIBE`] or [`PORT_SUBMIT`])
    /// applies when none is given.
    ///
    /// # Errors
    ///
    /// [`EndpointError`] naming the string and the problem.
    pub fn parse(input: &str, default_port: u16) -> Result<Self, EndpointError> {
        let s = input.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("path=").unwrap_or(path);
            if path.is_empty() {
                return Err(err(input, "unix: needs a socket path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (tls, s) = match s.strip_prefix("tls:").or_else(|| s.strip_prefix("ssl:")) {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix("tcp:").unwrap_or(s)),
        };
        let (host, port) = split_host_port(input, s)?;
        if host.is_empty() {
            return Err(err(input, "expected HOST, HOST:PORT or [IPV6]:PORT"));
        }
        if host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
            return Err(err(input, "a host name cannot contain spaces or `/`"));
        }
        let (host, port) = (host.to_owned(), port.unwrap_or(default_port));
        Ok(if tls {
            Self::Tls { host, port }
        } else {
            Self::Tcp { host, port }
        })
    }

    /// True for [`DialAddr::Tls`].
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls { .. })
    }
}

impl fmt::Display for DialAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tls { host, port } if host.contains(':') => write!(f, "tls:[{host}]:{port}"),
            Self::Tls { host, port } => write!(f, "tls:{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> ListenAddr {
        ListenAddr::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn listen_forms() {
        let ok = [
            ("8098", ListenAddr::AnyTcp(8098)),
            ("tcp:8098", ListenAddr::AnyTcp(8098)),
            ("tcp:port=8099", ListenAddr::AnyTcp(8099)),
            ("tcp:8098:interface=127.0.0.1", tcp("127.0.0.1", 8098)),
            ("tcp:8098:interface=::1", tcp("::1", 8098)),
            ("127.0.0.1:0", tcp("127.0.0.1", 0)),
            ("[::1]:8099", tcp("::1", 8099)),
            ("localhost:8099", tcp("localhost", 8099)),
            ("unix:/tmp/x.sock", ListenAddr::Unix("/tmp/x.sock".into())),
            (
                "unix:path=/tmp/y.sock",
                ListenAddr::Unix("/tmp/y.sock".into()),
            ),
        ];
        for (s, want) in ok {
            assert_eq!(ListenAddr::parse(s).as_ref(), Ok(&want), "{s}");
        }
        for bad in [
            "",
            "99999",
            "tcp:",
            "tcp:x",
            "host",
            "[::1",
            "unix:",
            ":80",
            "1.2.3.4:x",
        ] {
            let e = ListenAddr::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid endpoint"), "{e}");
        }
    }

    #[test]
    fn dial_forms() {
        let d = |s| DialAddr::parse(s, PORT_SUBSCRIBE);
        let t = |h: &str, p| DialAddr::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(d("example.org"), Ok(t("example.org", 8099)));
        assert_eq!(d("example.org:5000"), Ok(t("example.org", 5000)));
        assert_eq!(d("[::1]:8098"), Ok(t("::1", 8098)));
        assert_eq!(d("::1"), Ok(t("::1", 8099)));
        assert_eq!(d("tcp:127.0.0.1:1"), Ok(t("127.0.0.1", 1)));
        assert_eq!(d("unix:/x"), Ok(DialAddr::Unix("/x".into())));
        assert!(d("").is_err() && d("a b").is_err() && d("h:99999").is_err());
        assert_eq!(t("::1", 5).to_string(), "[::1]:5");
        let tls = |h: &str, p| DialAddr::Tls {
            host: h.into(),
            port: p,
        };
        assert_eq!(d("tls:example.org"), Ok(tls("example.org", 8099)));
        assert_eq!(d("ssl:example.org:5000"), Ok(tls("example.org", 5000)));
        assert_eq!(d("tls:[::1]:1"), Ok(tls("::1", 1)));
        assert_eq!(tls("::1", 1).to_string(), "tls:[::1]:1");
        assert!(d("tls:").is_err() && d("tls:h:x").is_err());
        assert!(tls("h", 1).is_tls() && !t("h", 1).is_tls());
    }

    #[test]
    fn tls_listen_forms() {
        let files = |key: &str, cert: &str, chain: Option<&str>, ca: Option<&str>| TlsListen {
            private_key: key.into(),
            cert_key: cert.into(),
            extra_cert_chain: chain.map(Into::into),
            client_ca: ca.map(Into::into),
        };
        let e = |s| ListenEndpoint::parse(s);
        assert_eq!(
            e("ssl:8098:privateKey=k.pem:certKey=c.pem"),
            Ok(ListenEndpoint {
                addr: ListenAddr::AnyTcp(8098),
                tls: Some(files("k.pem", "c.pem", None, None)),
            })
        );
        assert_eq!(
            e("tls:8099:interface=127.0.0.1:certKey=c.pem:privateKey=k.pem:clientCA=ca.pem"),
            Ok(ListenEndpoint {
                addr: tcp("127.0.0.1", 8099),
                tls: Some(files("k.pem", "c.pem", None, Some("ca.pem"))),
            })
        );
        // Twisted's defaults and escapes; an unescaped IPv6 interface.
        assert_eq!(
            e("ssl:port=1:privateKey=both.pem:extraCertChain=ch.pem:interface=::1"),
            Ok(ListenEndpoint {
                addr: tcp("::1", 1),
                tls: Some(files("both.pem", "both.pem", Some("ch.pem"), None)),
            })
        );
        assert_eq!(
            e("ssl:2:interface=\\:\\:1:privateKey=/a\\:b/k.pem").map(|x| x.addr),
            Ok(tcp("::1", 2))
        );
        assert_eq!(
            e("ssl:2:interface=::1:privateKey=/a\\:b/k.pem").map(|x| x.tls.map(|t| t.private_key)),
            Ok(Some("/a:b/k.pem".into()))
        );
        // Plain forms pass through.
        assert_eq!(e("8098"), Ok(ListenAddr::AnyTcp(8098).into()));
        for (bad, why) in [
            ("ssl:8098", "privateKey="),
            ("ssl:privateKey=k", "needs a port"),
            ("ssl:8098:privateKey=", "needs a file path"),
            ("ssl:8098:privateKey=k:verify=yes", "unknown option verify="),
            ("tls:x:privateKey=k", "unexpected"),
        ] {
            let err = e(bad).expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }
}
