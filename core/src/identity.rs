//! Certificate identities of TLS peers, and the rules that authorize them.
//!
//! A peer that presented a client certificate the listener verified (it chains to the
//! listener's `clientCA=`) has an [`Identity`]: the certificate's subject common name, its DNS
//! subject alternative names and the SHA-256 of the certificate's DER bytes. The host extracts
//! it after the handshake and hands it to the node
//! ([`Node::handle_secured`](crate::Node::handle_secured)); the node decides, here, whether the
//! peer may submit or subscribe ([`Config::author_identities`](crate::Config::author_identities),
//! [`Config::subscriber_identities`](crate::Config::subscriber_identities)).
//!
//! A rule ([`IdentityRule`]) is written as on the command line (`--author-identity ID`): a name
//! (matched, ASCII case-insensitively, against the common name and every DNS name) or
//! `sha256:HEX` (64 hex digits: one exact certificate, the way to pin a self-signed one).

use std::fmt;

/// Most DNS names kept from one certificate; the host drops the rest (and says so).
pub const DNS_NAMES_MAX: usize = 32;
/// Longest name (common name or DNS name) kept from a certificate, in bytes.
pub const NAME_LEN_MAX: usize = 255;

/// Who a verified client certificate says the peer is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension (at most [`DNS_NAMES_MAX`]).
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
}

impl Identity {
    /// True if any rule in `rules` names this identity.
    pub fn allowed_by(&self, rules: &[IdentityRule]) -> bool {
        rules.iter().any(|r| r.matches(self))
    }

    /// `sha256:` and the fingerprint in lower-case hex, as a rule writes it.
    pub fn fingerprint(&self) -> String {
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        push_hex(&mut s, &self.sha256);
        s
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(cn) = &self.common_name {
            write!(f, "CN={} ", cn.escape_debug())?;
        }
        if !self.dns_names.is_empty() {
            f.write_str("DNS=")?;
            for (i, d) in self.dns_names.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}", d.escape_debug())?;
            }
            f.write_str(" ")?;
        }
        f.write_str(&self.fingerprint())
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// One entry of `--author-identity` / `--subscriber-identity`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityRule {
    /// A common name or DNS name, compared ASCII case-insensitively.
    Name(String),
    /// One exact certificate, by the SHA-256 of its DER bytes.
    Sha256([u8; 32]),
}

/// A malformed identity rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {input:?}: {reason}")]
pub struct IdentityRuleError {
    /// The string given.
    pub input: String,
    /// What is wrong and what to write instead.
    pub reason: &'static str,
}

impl IdentityRule {
    /// Parses `NAME` or `sha256:HEX` (64 hex digits, `:` separators allowed as `openssl x509
    /// -fingerprint -sha256` prints them).
    ///
    /// # Errors
    ///
    /// Empty, too long, containing spaces or control characters, or a `sha256:` value that is
    /// not 32 bytes of hex.
    pub fn parse(input: &str) -> Result<Self, IdentityRuleError> {
        let bad = |reason| IdentityRuleError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if let Some(hex) = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
        {
            let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
            if digits.len() != 64 {
                return Err(bad(
                    "sha256: needs 64 hex digits (the SHA-256 of the DER certificate)",
                ));
            }
            let mut out = [0u8; 32];
            for (i, pair) in digits.chunks_exact(2).enumerate() {
                let (Some(hi), Some(lo)) = (hex_val(pair[0]), hex_val(pair[1])) else {
                    return Err(bad("sha256: value is not hexadecimal"));
                };
                out[i] = hi << 4 | lo;
            }
            return Ok(Self::Sha256(out));
        }
        if s.is_empty() {
            return Err(bad(
                "empty; give a certificate name (CN or DNS) or sha256:HEX",
            ));
        }
        if s.len() > NAME_LEN_MAX {
            return Err(bad("longer than 255 bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "a certificate name cannot contain spaces or control characters",
            ));
        }
        Ok(Self::Name(s.to_owned()))
    }

    /// True if this rule names `id`.
    pub fn matches(&self, id: &Identity) -> bool {
        match self {
            Self::Sha256(h) => *h == id.sha256,
            Self::Name(n) => id
                .common_name
                .iter()
                .chain(&id.dns_names)
                .any(|m| m.eq_ignore_ascii_case(n)),
        }
    }
}

impl fmt::Display for IdentityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Sha256(h) => {
                let mut s = String::from("sha256:");
                push_hex(&mut s, h);
                f.write_str(&s)
            }
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cn: Option<&str>, dns: &[&str], h: u8) -> Identity {
        Identity {
            common_name: cn.map(str::to_owned),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
            sha256: [h; 32],
        }
    }

    #[test]
    fn names_match_cn_or_dns_case_insensitively() {
        let rule = IdentityRule::parse("Author.Example.ORG").unwrap();
        assert!(rule.matches(&id(Some("author.example.org"), &[], 1)));
        assert!(rule.matches(&id(Some("x"), &["a", "AUTHOR.example.org"], 1)));
        assert!(!rule.matches(&id(Some("author.example.org.evil"), &["other"], 1)));
        assert!(!rule.matches(&id(None, &[], 1)));
    }

    #[test]
    fn fingerprints_pin_one_certificate() {
        let hex = "ab".repeat(32);
        let rule = IdentityRule::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(rule, IdentityRule::Sha256([0xab; 32]));
        assert!(rule.matches(&id(None, &[], 0xab)));
        assert!(!rule.matches(&id(Some(&hex), &[], 0xac)));
        // openssl's colon-separated upper-case form.
        let colons = ["AB"; 32].join(":");
        assert_eq!(
            IdentityRule::parse(&format!("SHA256:{colons}")).unwrap(),
            rule
        );
        assert_eq!(rule.to_string(), format!("sha256:{hex}"));
        assert_eq!(id(None, &[], 0xab).fingerprint(), format!("sha256:{hex}"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (bad, why) in [
            ("", "empty"),
            ("sha256:abc", "64 hex digits"),
            (&format!("sha256:{}", "zz".repeat(32)), "not hexadecimal"),
            ("a b", "spaces"),
            (&"x".repeat(300), "255"),
        ] {
            let e = IdentityRule::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn display_names_everything_and_escapes() {
        let s = id(Some("a\nb"), &["x", "y"], 0).to_string();
        assert!(s.starts_with("CN=a\\nb DNS=x,y sha256:00"), "{s}");
        assert!(!s.contains('\n'));
        assert!(id(Some("c"), &[], 1).allowed_by(&[IdentityRule::Name("C".into())]));
        assert!(!id(Some("c"), &[], 1).allowed_by(&[]));
    }
}
