//! IP whitelists for accepted connections (VTP 2.0 §9.1; docs/protocol.md §4.4).
//!
//! A broker checks each peer address when it accepts a connection; a peer that is not listed is
//! closed without a byte sent. Networks are written as Comet (Python's `ipaddress.ip_network`)
//! writes them: CIDR (`10.0.0.0/8`, `2001:db8::/32`), IPv4 address and netmask
//! (`127.0.0.1/255.255.255.255`), or a bare address meaning one host (`/32` or `/128`).
//!
//! Two choices differ from Comet (docs/protocol.md §7.1 item 14):
//!
//! - The default, [`Whitelist::allow_all`], allows `0.0.0.0/0` **and** `::/0`. Comet's default
//!   (`0.0.0.0/0` only) shuts out every IPv6 peer.
//! - An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) is
//!   also matched as the IPv4 address `a.b.c.d`.
//!
//! A network with host bits set (`127.0.0.1/24`) is accepted and masked (`127.0.0.0/24`) like
//! Comet 3.1 (`strict=False`); Comet HEAD rejects it. [`IpNet::had_host_bits`] lets the caller
//! warn about it.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 network: an address with its host bits cleared and a prefix length.
///
/// Parse one with [`str::parse`] (see the [module docs](self) for the syntax). Equality compares
/// the network only, not whether host bits were set in the text it came from. [`Display`]
/// writes canonical CIDR (`10.0.0.0/8`, `2001:db8::/32`).
///
/// [`Display`]: fmt::Display
#[derive(Debug, Clone, Copy)]
pub struct IpNet {
    /// The network address, host bits cleared.
    addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix_len: u8,
    /// Whether the parsed text had host bits set (they were cleared).
    had_host_bits: bool,
}

impl IpNet {
    /// Whether `ip` lies in this network.
    ///
    /// An IPv4 network never contains an IPv6 address and vice versa, IPv4-mapped ones included;
    /// [`Whitelist::allows`] does the unmapping.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether the text this network was parsed from had host bits set (`127.0.0.1/24`).
    ///
    /// They have been cleared; the CLI should warn, since the user may have meant a host.
    pub fn had_host_bits(&self) -> bool {
        self.had_host_bits
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl PartialEq for IpNet {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.prefix_len == other.prefix_len
    }
}

impl Eq for IpNet {}

impl FromStr for IpNet {
    type Err = NetParseError;

    /// Parses `addr`, `addr/prefix_len` or (IPv4 only) `addr/netmask`.
    ///
    /// The prefix length is ASCII decimal (leading zeros allowed, as in Python). A netmask must
    /// be contiguous (ones, then zeros); like Python, an inverted host mask (`0.0.0.255`, the
    /// same as `/24`) is accepted too. No surrounding whitespace, zone IDs or brackets.
    ///
    /// # Errors
    ///
    /// [`NetParseError`] naming the input if it is empty, the address is not an IP address, the
    /// prefix length is out of range, or the netmask is not contiguous.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NetParseError::Empty);
        }
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| NetParseError::InvalidAddress { input: s.into() })?;
        let prefix_len = match (addr, prefix_text) {
            (IpAddr::V4(_), None) => 32,
            (IpAddr::V6(_), None) => 128,
            (IpAddr::V4(_), Some(p)) => prefix_v4(p, s)?,
            (IpAddr::V6(_), Some(p)) => {
                parse_prefix_len(p, 128).ok_or_else(|| NetParseError::InvalidPrefix {
                    input: s.into(),
                    max: 128,
                })?
            }
        };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix_len))),
        };
        Ok(Self {
            addr: masked,
            prefix_len,
            had_host_bits: masked != addr,
        })
    }
}

impl fmt::Display for IpNet {
    /// Canonical CIDR: `10.0.0.0/8`, `::1/128`, `2001:db8::/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A set of networks allowed to connect.
///
/// The [`Default`] is [`Whitelist::allow_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whitelist {
    /// Allowed networks; empty allows nothing.
    nets: Vec<IpNet>,
}

impl Whitelist {
    /// A whitelist allowing every IPv4 and IPv6 peer (`0.0.0.0/0` and `::/0`).
    ///
    /// Implementation note: Comet's default is `0.0.0.0/0` alone, which shuts out IPv6 peers;
    /// we allow both families (docs/protocol.md §7.1 item 14).
    pub fn allow_all() -> Self {
        Self {
            nets: vec![
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix_len: 0,
                    had_host_bits: false,
                },
                IpNet {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    prefix_len: 0,
                    had_host_bits: false,
                },
            ],
        }
    }

    /// A whitelist allowing exactly the peers in `nets`.
    ///
    /// An empty `nets` allows **nothing**: every connection is refused.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Parses a CLI value: one or more networks separated by commas and/or whitespace.
    ///
    /// `"10.0.0.0/8, 192.168.1.7 ::1"` gives three networks. Empty items between separators
    /// are skipped; each item is parsed by [`IpNet::from_str`].
    ///
    /// # Errors
    ///
    /// [`NetParseError::Empty`] if `s` holds no network at all, otherwise the error of the first
    /// item that does not parse (it names that item).
    pub fn parse_list(s: &str) -> Result<Vec<IpNet>, NetParseError> {
        let nets = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<IpNet>, _>>()?;
        if nets.is_empty() {
            return Err(NetParseError::Empty);
        }
        Ok(nets)
    }

    /// Whether a peer at `ip` may connect.
    ///
    /// True if any listed network contains `ip`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// is also tried as the IPv4 address `a.b.c.d`, so IPv4 networks match IPv4 peers seen
    /// through a dual-stack socket. (The deprecated IPv4-compatible form `::a.b.c.d` is not
    /// unmapped.)
    pub fn allows(&self, ip: IpAddr) -> bool {
        let unmapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(ip) || unmapped.is_some_and(|v4| net.contains(v4)))
    }

    /// The allowed networks, in the order given.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl Default for Whitelist {
    /// [`Whitelist::allow_all`].
    fn default() -> Self {
        Self::allow_all()
    }
}

/// Why a network (or a list of them) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetParseError {
    /// No network was given.
    #[error(
        "empty network: give an address or network such as `192.0.2.7`, `10.0.0.0/8` or \
         `2001:db8::/32`"
    )]
    Empty,
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error(
        "`{input}` is not an IP network: the address is not a valid IPv4 or IPv6 address \
         (write e.g. `10.0.0.0/8` or `2001:db8::/32`, without brackets or zone)"
    )]
    InvalidAddress {
        /// The text that was parsed.
        input: String,
    },
    /// The part after `/` is not a prefix length in range (nor, for IPv4, a netmask).
    #[error(
        "`{input}` is not an IP network: after `/` give a prefix length from 0 to {max}{}",
        if *max == 32 { " or a netmask such as 255.255.255.0" } else { "" }
    )]
    InvalidPrefix {
        /// The text that was parsed.
        input: String,
        /// The largest prefix length for the address family (32 or 128).
        max: u8,
    },
    /// The IPv4 netmask after `/` is not ones followed by zeros.
    #[error(
        "`{input}` is not an IP network: the netmask is not contiguous (all one bits must \
         come before all zero bits, as in 255.255.240.0); use a prefix length instead"
    )]
    NonContiguousMask {
        /// The text that was parsed.
        input: String,
    },
}

/// Parses an IPv4 prefix: decimal 0..=32, or a netmask (or an inverted host mask).
fn prefix_v4(p: &str, input: &str) -> Result<u8, NetParseError> {
    if let Some(len) = parse_prefix_len(p, 32) {
        return Ok(len);
    }
    let Ok(mask) = p.parse::<Ipv4Addr>() else {
        return Err(NetParseError::InvalidPrefix {
            input: input.into(),
            max: 32,
        });
    };
    let mask = u32::from(mask);
    // Python tries a netmask first, then a host mask (its bitwise inverse).
    contiguous_prefix(mask)
        .or_else(|| contiguous_prefix(!mask))
        .ok_or_else(|| NetParseError::NonContiguousMask {
            input: input.into(),
        })
}

/// The prefix length of a contiguous IPv4 netmask (ones, then zeros), or `None`.
fn contiguous_prefix(mask: u32) -> Option<u8> {
    let ones = mask.leading_ones();
    // `ones <= 32`, so the cast is lossless.
    (mask_v4(ones as u8) == mask).then_some(ones as u8)
}

/// Parses an ASCII-decimal prefix length no larger than `max`.
///
/// Leading zeros are allowed and signs are not, as in Python's `ipaddress`.
fn parse_prefix_len(p: &str, max: u8) -> Option<u8> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = p.trim_start_matches('0');
    // After the zeros, more than 3 digits is out of range for any family (and for `u8`).
    if digits.len() > 3 {
        return None;
    }
    let value: u16 = digits.parse().unwrap_or(0);
    u8::try_from(value).ok().filter(|&v| v <= max)
}

/// The IPv4 netmask for `prefix_len` (0..=32).
fn mask_v4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// The IPv6 netmask for `prefix_len` (0..=128).
fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn parses_cidr_netmask_and_bare_addresses() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1/255.255.255.255", "127.0.0.1/32"),
            ("127.0.0.1/32", "127.0.0.1/32"),
            ("192.168.0.0/255.255.0.0", "192.168.0.0/16"),
            ("10.0.0.0/0.255.255.255", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("0.0.0.0/0.0.0.0", "0.0.0.0/0"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("10.0.0.0/008", "10.0.0.0/8"),
            ("::1/128", "::1/128"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:0DB8:0000::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ];
        for (input, canonical) in cases {
            let n = net(input);
            assert_eq!(n.to_string(), canonical, "{input}");
            assert!(!n.had_host_bits(), "{input}");
            // Canonical text parses back to the same network.
            assert_eq!(net(canonical), n);
        }
    }

    #[test]
    fn host_bits_are_masked_and_reported() {
        let n = net("127.0.0.1/24");
        assert_eq!(n.to_string(), "127.0.0.0/24");
        assert!(n.had_host_bits());
        assert_eq!(n, net("127.0.0.0/24"));
        let n6 = net("2001:db8::1/32");
        assert_eq!(n6.to_string(), "2001:db8::/32");
        assert!(n6.had_host_bits());
        assert_eq!(n6.addr(), ip("2001:db8::"));
        assert_eq!(n6.prefix_len(), 32);
    }

    #[test]
    fn rejects_garbage_naming_the_input() {
        let bad = [
            ("nonsense", "InvalidAddress"),
            ("10.0.0/8", "InvalidAddress"),
            ("010.0.0.1", "InvalidAddress"),
            ("10.0.0.256", "InvalidAddress"),
            ("[::1]/128", "InvalidAddress"),
            ("fe80::1%eth0", "InvalidAddress"),
            (" 10.0.0.0/8", "InvalidAddress"),
            ("/8", "InvalidAddress"),
            ("10.0.0.0/33", "InvalidPrefix"),
            ("10.0.0.0/", "InvalidPrefix"),
            ("10.0.0.0/+8", "InvalidPrefix"),
            ("10.0.0.0/-1", "InvalidPrefix"),
            ("10.0.0.0/8/8", "InvalidPrefix"),
            ("10.0.0.0/99999999999999999999", "InvalidPrefix"),
            ("::1/129", "InvalidPrefix"),
            ("::1/ffff::", "InvalidPrefix"),
            ("10.0.0.0/255.0.255.0", "NonContiguousMask"),
            ("10.0.0.0/255.255.255.1", "NonContiguousMask"),
        ];
        for (input, kind) in bad {
            let err = input.parse::<IpNet>().expect_err(input);
            assert!(format!("{err:?}").starts_with(kind), "{input}: {err:?}");
            assert!(err.to_string().contains(&format!("`{input}`")), "{err}");
        }
        assert_eq!("".parse::<IpNet>(), Err(NetParseError::Empty));
    }

    #[test]
    fn contains_respects_prefix_and_family() {
        let n = net("10.1.0.0/16");
        assert!(n.contains(ip("10.1.0.0")));
        assert!(n.contains(ip("10.1.255.255")));
        assert!(!n.contains(ip("10.2.0.0")));
        assert!(!n.contains(ip("::ffff:10.1.0.1")));
        let all4 = net("0.0.0.0/0");
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(!all4.contains(ip("::1")));
        let n6 = net("2001:db8::/32");
        assert!(n6.contains(ip("2001:db8:ffff::1")));
        assert!(!n6.contains(ip("2001:db9::1")));
        assert!(!n6.contains(ip("10.0.0.1")));
        let host = net("::1");
        assert!(host.contains(ip("::1")));
        assert!(!host.contains(ip("::2")));
    }

    #[test]
    fn default_allows_both_families() {
        let w = Whitelist::default();
        assert_eq!(w, Whitelist::allow_all());
        for peer in [
            "192.0.2.1",
            "0.0.0.0",
            "::1",
            "2001:db8::5",
            "::ffff:192.0.2.1",
        ] {
            assert!(w.allows(ip(peer)), "{peer}");
        }
        assert_eq!(w.nets().len(), 2);
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_networks() {
        let w = Whitelist::new(vec![net("192.0.2.0/24")]);
        assert!(w.allows(ip("192.0.2.9")));
        assert!(w.allows(ip("::ffff:192.0.2.9")));
        assert!(!w.allows(ip("::ffff:198.51.100.1")));
        // The deprecated IPv4-compatible form is not unmapped.
        assert!(!w.allows(ip("::192.0.2.9")));
        // An IPv6 network written in mapped form still matches the mapped peer.
        let w6 = Whitelist::new(vec![net("::ffff:192.0.2.0/120")]);
        assert!(w6.allows(ip("::ffff:192.0.2.9")));
        assert!(!w6.allows(ip("192.0.2.9")));
    }

    #[test]
    fn empty_whitelist_allows_nothing() {
        let w = Whitelist::new(Vec::new());
        assert!(!w.allows(ip("127.0.0.1")));
        assert!(!w.allows(ip("::1")));
    }

    #[test]
    fn parse_list_splits_on_commas_and_whitespace() {
        let nets = Whitelist::parse_list("10.0.0.0/8, 192.0.2.7\t::1,,2001:db8::/32\n")
            .expect("valid list");
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["10.0.0.0/8", "192.0.2.7/32", "::1/128", "2001:db8::/32"]
        );
        let w = Whitelist::new(nets);
        assert!(w.allows(ip("10.9.9.9")));
        assert!(!w.allows(ip("192.0.2.8")));
        assert_eq!(Whitelist::parse_list(" , \n"), Err(NetParseError::Empty));
        assert_eq!(Whitelist::parse_list(""), Err(NetParseError::Empty));
        let err = Whitelist::parse_list("10.0.0.0/8 bogus").expect_err("bogus item");
        assert_eq!(
            err,
            NetParseError::InvalidAddress {
                input: "bogus".into()
            }
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask_v4(0), 0);
        assert_eq!(mask_v4(8), 0xff00_0000);
        assert_eq!(mask_v4(32), u32::MAX);
        assert_eq!(mask_v6(0), 0);
        assert_eq!(mask_v6(1), 1 << 127);
        assert_eq!(mask_v6(128), u128::MAX);
    }
}
