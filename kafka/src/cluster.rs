//! The cluster as this client sees it: connections by broker id, metadata (brokers,
//! topics, partition leaders), the group coordinator, and topic subscriptions by name or
//! glob.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, TopicName, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::config::Config;
use crate::conn::{Conn, Request};
use crate::error::{Error, Result};

const METADATA: VersionRange = VersionRange { min: 1, max: 9 };
const METADATA_KEY: i16 = kafka_protocol::messages::ApiKey::Metadata as i16;
const FIND_COORDINATOR: VersionRange = VersionRange { min: 0, max: 3 };

/// What the cluster said about its brokers and topics.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Brokers by node id: `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
}

/// One topic of [`Metadata`].
#[derive(Clone, Debug, Default)]
pub struct TopicInfo {
    /// The topic's error (for example `TopicAuthorizationFailed`), if any; then
    /// `partitions` is usually empty.
    pub error: Option<ResponseError>,
    /// Partition id to leader node id (`-1` when it has none right now).
    pub partitions: BTreeMap<i32, i32>,
}

/// A topic subscription: an exact name, or a glob with `*` (any run of characters) and `?`
/// (one character), like `gcn.classic.voevent.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// This topic.
    Exact(String),
    /// Every topic whose name matches.
    Glob(String),
}

impl Subscription {
    /// `Glob` if the text has `*` or `?`, else `Exact`.
    pub fn parse(text: &str) -> Self {
        if text.contains(['*', '?']) {
            Subscription::Glob(text.to_owned())
        } else {
            Subscription::Exact(text.to_owned())
        }
    }

    /// True if this subscription takes `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Exact(name) => name == topic,
            Subscription::Glob(pattern) => glob_match(pattern.as_bytes(), topic.as_bytes()),
        }
    }
}

/// Glob matching with `*` and `?`, linear backtracking on the last star.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Connections and metadata. Broken connections are dropped on the next use.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) config: Config,
    conns: BTreeMap<i32, Conn>,
    /// A connection to a bootstrap broker, used until the node ids are known.
    bootstrap: Option<Conn>,
    pub(crate) metadata: Metadata,
}

impl Cluster {
    pub(crate) fn new(config: Config) -> Result<Self> {
        config.validate()?;
        Ok(Cluster {
            config,
            conns: BTreeMap::new(),
            bootstrap: None,
            metadata: Metadata::default(),
        })
    }

    /// Refreshes metadata for these topics (`None`: all topics).
    pub(crate) fn refresh(&mut self, topics: Option<&[String]>) -> Result<&Metadata> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(n.clone())));
                    t
                })
                .collect()
        });
        let resp = self.any(|conn| {
            // Below v4 the field is absent (and its default, true, must stay); topics are
            // created on metadata requests only by brokers configured to.
            let version = conn.version_for(METADATA_KEY, METADATA)?;
            req.allow_auto_topic_creation = version < 4;
            conn.request(&req, METADATA).map(|(r, _)| r)
        })?;
        let mut md = Metadata::default();
        for b in &resp.brokers {
            md.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in resp.topics {
            let Some(name) = t.name else { continue };
            let info = TopicInfo {
                error: ResponseError::try_from_code(t.error_code),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect(),
            };
            md.topics.insert(name.0.to_string(), info);
        }
        // Connections to brokers that moved or left are dropped.
        let brokers = &md.brokers;
        let old = &self.metadata.brokers;
        self.conns
            .retain(|id, _| brokers.get(id).is_some() && brokers.get(id) == old.get(id));
        self.metadata = md;
        Ok(&self.metadata)
    }

    /// Runs `f` on some connection: an open one, else a bootstrap broker's, else a known
    /// broker's. Only connection failures move on to the next broker.
    pub(crate) fn any<T>(&mut self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        if let Some(id) = self.conns.keys().next().copied() {
            return self.with_conn(id, f);
        }
        if let Some(conn) = self.bootstrap.as_mut() {
            let r = f(conn);
            if conn.is_broken() {
                self.bootstrap = None;
            }
            return r;
        }
        let mut last = None;
        let candidates: Vec<String> = self
            .config
            .bootstrap
            .iter()
            .chain(self.metadata.brokers.values())
            .cloned()
            .collect();
        for addr in candidates {
            match Conn::open(&addr, &self.config) {
                Ok(mut conn) => {
                    let r = f(&mut conn);
                    if !conn.is_broken() {
                        self.bootstrap = Some(conn);
                    }
                    return r;
                }
                Err(e @ (Error::Connect { .. } | Error::Io { .. } | Error::Timeout { .. })) => {
                    tracing::debug!(error = %e, "kafka bootstrap broker unavailable");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoBroker("no bootstrap broker".into())))
    }

    /// Runs `f` on the connection to broker `id`, opening it if needed; drops it if `f`
    /// leaves it broken.
    pub(crate) fn with_conn<T>(
        &mut self,
        id: i32,
        f: impl FnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        if !self.conns.contains_key(&id) {
            let addr =
                self.metadata.brokers.get(&id).cloned().ok_or_else(|| {
                    Error::NoBroker(format!("broker {id} is not in the metadata"))
                })?;
            let conn = Conn::open(&addr, &self.config)?;
            self.conns.insert(id, conn);
        }
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or_else(|| Error::NoBroker(format!("broker {id}")))?;
        let r = f(conn);
        if conn.is_broken() {
            self.conns.remove(&id);
        }
        r
    }

    /// Drops every connection (after a fault the caller will retry).
    pub(crate) fn disconnect(&mut self) {
        self.conns.clear();
        self.bootstrap = None;
    }

    /// Finds the coordinator of `group` and returns its node id (adding it to the brokers).
    pub(crate) fn coordinator(&mut self, group: &str) -> Result<i32> {
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(group.to_owned());
        req.key_type = 0;
        let (resp, addr) = self.any(|conn| {
            conn.request(&req, FIND_COORDINATOR)
                .map(|(r, _)| (r, conn.addr().to_owned()))
        })?;
        if let Some(code) = ResponseError::try_from_code(resp.error_code) {
            return Err(Error::broker(&addr, "FindCoordinator", code));
        }
        let id = resp.node_id.0;
        let at = format!("{}:{}", resp.host.as_str(), resp.port);
        self.metadata.brokers.entry(id).or_insert(at);
        Ok(id)
    }

    /// Sends `req` to broker `id` (see [`Conn::request`]).
    pub(crate) fn request<R: Request>(
        &mut self,
        id: i32,
        req: &R,
        ours: VersionRange,
        extra: Duration,
    ) -> Result<(R::Response, i16, String)> {
        self.with_conn(id, |conn| {
            conn.request_with_extra(req, ours, extra)
                .map(|(r, v)| (r, v, conn.addr().to_owned()))
        })
    }
}

/// A topic name as a shared string.
pub(crate) fn topic_arc(name: &TopicName) -> Arc<str> {
    Arc::from(name.0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        let s = Subscription::parse("gcn.classic.voevent.*");
        assert!(matches!(s, Subscription::Glob(_)));
        assert!(s.matches("gcn.classic.voevent.SWIFT_BAT_GRB_POS_ACK"));
        assert!(s.matches("gcn.classic.voevent."));
        assert!(!s.matches("gcn.classic.text.SWIFT_BAT_GRB_POS_ACK"));
        assert!(!s.matches("xgcn.classic.voevent.A"));
        let q = Subscription::parse("a?c*z");
        assert!(q.matches("abcz") && q.matches("abc-yz") && !q.matches("acz"));
        assert!(Subscription::parse("*").matches(""));
        assert!(Subscription::parse("**a*").matches("bab"));
        assert!(!Subscription::parse("*a").matches("ab"));
    }

    #[test]
    fn exact_names_are_not_patterns() {
        let s = Subscription::parse("gcn.classic.voevent.LVC_INITIAL");
        assert_eq!(
            s,
            Subscription::Exact("gcn.classic.voevent.LVC_INITIAL".into())
        );
        assert!(!s.matches("gcn.classic.voevent.LVC_INITIALX"));
    }

    #[test]
    fn glob_matching_is_not_exponential() {
        let text = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(20));
        let started = std::time::Instant::now();
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
