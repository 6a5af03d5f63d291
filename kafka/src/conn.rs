//! One blocking connection to one broker: TCP (and TLS), the 4-byte length-prefixed frames,
//! correlation ids, ApiVersions negotiation and SASL.
//!
//! # Theory of operation
//!
//! [`Conn::open`] connects, runs the TLS handshake when asked, sends ApiVersions (v3, falling
//! back to the version the broker names when it refuses v3, then v0) and, when SASL is
//! configured, authenticates. After that [`Conn::request`] sends one request and waits for
//! its response: requests are not pipelined, so the response must carry the correlation id
//! just sent. Every response length is checked against the response bound before any buffer
//! is allocated for it. Any fault (timeout, short read, undecodable frame, wrong id) is an
//! error naming the broker, and the caller must drop the connection: its byte stream is no
//! longer in a known state.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, StrBytes, VersionRange, encode_request_header_into_buffer,
};

/// A request this client sends: its API key and response type. (kafka-protocol's own
/// `Request` trait exists only when its broker-side codecs are compiled too.)
pub(crate) trait Request: Encodable {
    /// The API key.
    const KEY: i16;
    /// The response message.
    type Response: Decodable + HeaderVersion;
}

macro_rules! requests {
    ($($key:ident: $req:ident => $resp:ident,)*) => {
        $(impl Request for m::$req {
            const KEY: i16 = ApiKey::$key as i16;
            type Response = m::$resp;
        })*
    };
}

requests! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse,
    Metadata: MetadataRequest => MetadataResponse,
    FindCoordinator: FindCoordinatorRequest => FindCoordinatorResponse,
    Fetch: FetchRequest => FetchResponse,
    ListOffsets: ListOffsetsRequest => ListOffsetsResponse,
    OffsetFetch: OffsetFetchRequest => OffsetFetchResponse,
    OffsetCommit: OffsetCommitRequest => OffsetCommitResponse,
    InitProducerId: InitProducerIdRequest => InitProducerIdResponse,
    Produce: ProduceRequest => ProduceResponse,
    SaslHandshake: SaslHandshakeRequest => SaslHandshakeResponse,
    SaslAuthenticate: SaslAuthenticateRequest => SaslAuthenticateResponse,
}

use crate::config::Config;
use crate::error::{Error, Result};

/// A connected, authenticated broker connection.
pub(crate) struct Conn {
    addr: String,
    stream: Stream,
    correlation_id: i32,
    /// The broker's supported range per API key.
    versions: BTreeMap<i16, VersionRange>,
    client_id: StrBytes,
    response_max: usize,
    request_timeout: Duration,
    /// Set after a fault that leaves the byte stream out of step: drop the connection.
    broken: bool,
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.addr).finish()
    }
}

/// The ApiVersions versions this client speaks.
const API_VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

impl Conn {
    /// Connects to `addr` (`host:port`), negotiates versions and authenticates.
    pub(crate) fn open(addr: &str, config: &Config) -> Result<Self> {
        let deadline = Instant::now() + config.connect_timeout;
        let tcp = connect_tcp(addr, config.connect_timeout)?;
        let stream = if config.security.tls() {
            let tls = config
                .tls
                .clone()
                .ok_or_else(|| Error::Config("TLS asked for but no TLS configuration".into()))?;
            Stream::Tls(Box::new(tls_handshake(addr, tcp, tls, deadline)?))
        } else {
            Stream::Tcp(tcp)
        };
        let mut conn = Conn {
            addr: addr.to_owned(),
            stream,
            correlation_id: 0,
            versions: BTreeMap::new(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            response_max: config.bounds.response_max,
            request_timeout: config.connect_timeout,
            broken: false,
        };
        conn.negotiate_versions()?;
        if let Some(sasl) = &config.sasl {
            crate::sasl::authenticate(&mut conn, sasl)?;
        }
        conn.request_timeout = config.request_timeout;
        Ok(conn)
    }

    /// Wraps an already connected plain TCP stream (tests), without negotiation.
    #[cfg(test)]
    pub(crate) fn from_tcp(addr: &str, tcp: TcpStream, response_max: usize) -> Self {
        Conn {
            addr: addr.to_owned(),
            stream: Stream::Tcp(tcp),
            correlation_id: 0,
            versions: BTreeMap::new(),
            client_id: StrBytes::from_static_str("test"),
            response_max,
            request_timeout: Duration::from_secs(5),
            broken: false,
        }
    }

    /// Sends `req` at the highest version both sides support within `ours`, waits for the
    /// response and decodes it. Returns the response and the version used.
    pub(crate) fn request<R: Request>(
        &mut self,
        req: &R,
        ours: VersionRange,
    ) -> Result<(R::Response, i16)> {
        let version = self.version_for(R::KEY, ours)?;
        let resp = self.request_at(req, version, self.request_timeout)?;
        Ok((resp, version))
    }

    /// Like [`Conn::request`] but waits `extra` longer than the request timeout (a fetch
    /// that waits at the broker).
    pub(crate) fn request_with_extra<R: Request>(
        &mut self,
        req: &R,
        ours: VersionRange,
        extra: Duration,
    ) -> Result<(R::Response, i16)> {
        let version = self.version_for(R::KEY, ours)?;
        let resp = self.request_at(req, version, self.request_timeout + extra)?;
        Ok((resp, version))
    }

    /// True once a fault has left the connection unusable (anything but a response over the
    /// bound that could be skipped).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// The `host:port` this connection is to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `key` both sides support within `ours`, the highest one.
    pub(crate) fn version_for(&self, key: i16, ours: VersionRange) -> Result<i16> {
        let theirs = self.versions.get(&key).copied();
        let common = theirs.map(|t| t.intersect(&ours));
        match common {
            Some(c) if !c.is_empty() => Ok(c.max),
            _ => Err(Error::Unsupported {
                broker: self.addr.clone(),
                api: api_name(key),
                ours: ours.to_string(),
            }),
        }
    }

    /// Sends one request at exactly `version` and decodes its response.
    pub(crate) fn request_at<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let result = self.send(req, version).and_then(|correlation_id| {
            let mut frame = self.read_frame(Instant::now() + timeout, api_name(R::KEY))?;
            self.decode_response::<R>(&mut frame, version, correlation_id)
        });
        if let Err(e) = &result
            && !matches!(e, Error::FrameTooLarge { .. })
        {
            self.broken = true;
        }
        result
    }

    fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        encode_request_header_into_buffer(&mut buf, &header)
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| {
                Error::Config(format!(
                    "cannot encode {} v{version}: {e}",
                    api_name(R::KEY)
                ))
            })?;
        let len = u32::try_from(buf.len() - 4)
            .map_err(|_| Error::Config("request larger than 4 GiB".into()))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let deadline = Instant::now() + self.request_timeout;
        self.set_timeout(deadline, api_name(R::KEY))?;
        let addr = &self.addr;
        let result = match &mut self.stream {
            Stream::Tcp(s) => s.write_all(&buf).and_then(|()| s.flush()),
            Stream::Tls(s) => s.write_all(&buf).and_then(|()| s.flush()),
        };
        result.map_err(|e| io_error(addr, e, api_name(R::KEY), self.request_timeout))?;
        Ok(self.correlation_id)
    }

    /// Reads one frame: the length prefix, checked against the bound, then the body.
    pub(crate) fn read_frame(&mut self, deadline: Instant, what: &'static str) -> Result<Bytes> {
        let mut prefix = [0u8; 4];
        self.read_exact(&mut prefix, deadline, what)?;
        let len = i32::from_be_bytes(prefix);
        if len < 0 {
            return Err(Error::bad_frame(
                &self.addr,
                format!("negative length prefix {len}"),
            ));
        }
        let len = len as usize;
        if len > self.response_max {
            // Skip the body without keeping it, so the connection stays in step.
            self.broken = self.discard(len, deadline, what).is_err();
            return Err(Error::FrameTooLarge {
                broker: self.addr.clone(),
                len: len as u64,
                max: self.response_max,
            });
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, deadline, what)?;
        Ok(Bytes::from(body))
    }

    fn decode_response<R: Request>(
        &self,
        frame: &mut Bytes,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response> {
        if frame.remaining() < 4 {
            return Err(Error::bad_frame(
                &self.addr,
                format!("{} response of {} bytes", api_name(R::KEY), frame.len()),
            ));
        }
        // The correlation id is the first field of every response header version.
        let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if got != correlation_id {
            return Err(Error::bad_frame(
                &self.addr,
                format!("correlation id {got}, expected {correlation_id}"),
            ));
        }
        let header_version = R::Response::header_version(version);
        kafka_protocol::messages::ResponseHeader::decode(frame, header_version)
            .and_then(|_| R::Response::decode(frame, version))
            .map_err(|e| {
                Error::bad_frame(
                    &self.addr,
                    format!(
                        "cannot decode {} v{version} response: {e}",
                        api_name(R::KEY)
                    ),
                )
            })
    }

    fn negotiate_versions(&mut self) -> Result<()> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("vtp-kafka");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = API_VERSIONS.max;
        let timeout = self.request_timeout;
        for _ in 0..3 {
            let correlation_id = self.send(&req, version)?;
            let mut frame = self.read_frame(Instant::now() + timeout, "ApiVersions")?;
            // A broker that refuses this version answers in v0 with UNSUPPORTED_VERSION and
            // its own range for ApiVersions.
            let resp = match self.decode_response::<ApiVersionsRequest>(
                &mut frame.clone(),
                version,
                correlation_id,
            ) {
                Ok(r) => r,
                Err(e) if version > 0 => {
                    match self.decode_response::<ApiVersionsRequest>(&mut frame, 0, correlation_id)
                    {
                        Ok(r) => r,
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if resp.error_code == 35 {
                let theirs = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map_or(0, |k| k.max_version);
                let next = theirs.min(version - 1).max(0);
                if version == 0 {
                    break;
                }
                version = next;
                continue;
            }
            if resp.error_code != 0 {
                return Err(Error::broker(
                    &self.addr,
                    "ApiVersions",
                    kafka_protocol::ResponseError::try_from_code(resp.error_code)
                        .unwrap_or(kafka_protocol::ResponseError::Unknown(resp.error_code)),
                ));
            }
            self.versions = resp
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.api_key,
                        VersionRange {
                            min: k.min_version,
                            max: k.max_version,
                        },
                    )
                })
                .collect();
            tracing::debug!(broker = %self.addr, apis = self.versions.len(), "kafka versions negotiated");
            return Ok(());
        }
        Err(Error::Unsupported {
            broker: self.addr.clone(),
            api: "ApiVersions",
            ours: API_VERSIONS.to_string(),
        })
    }

    fn read_exact(
        &mut self,
        mut buf: &mut [u8],
        deadline: Instant,
        what: &'static str,
    ) -> Result<()> {
        let total = buf.len();
        while !buf.is_empty() {
            self.set_timeout(deadline, what)?;
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.read(buf),
                Stream::Tls(s) => s.read(buf),
            };
            match n {
                Ok(0) => {
                    return Err(if buf.len() == total {
                        Error::Io {
                            broker: self.addr.clone(),
                            source: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the broker closed the connection",
                            ),
                        }
                    } else {
                        Error::bad_frame(
                            &self.addr,
                            format!(
                                "truncated: the connection closed after {} of {total} bytes",
                                total - buf.len()
                            ),
                        )
                    });
                }
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io_error(&self.addr, e, what, self.request_timeout));
                }
            }
        }
        Ok(())
    }

    fn discard(&mut self, mut len: usize, deadline: Instant, what: &'static str) -> Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        while len > 0 {
            let n = len.min(scratch.len());
            self.read_exact(&mut scratch[..n], deadline, what)?;
            len -= n;
        }
        Ok(())
    }

    fn set_timeout(&self, deadline: Instant, what: &'static str) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                broker: self.addr.clone(),
                what,
                timeout_ms: self.request_timeout.as_millis() as u64,
            });
        }
        let sock = match &self.stream {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        };
        sock.set_read_timeout(Some(left))
            .and_then(|()| sock.set_write_timeout(Some(left)))
            .map_err(|source| Error::Io {
                broker: self.addr.clone(),
                source,
            })
    }
}

/// Maps an IO error on an established connection.
fn io_error(addr: &str, e: io::Error, what: &'static str, timeout: Duration) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
            broker: addr.to_owned(),
            what,
            timeout_ms: timeout.as_millis() as u64,
        },
        _ => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => Error::Tls {
                broker: addr.to_owned(),
                source: tls.clone(),
            },
            None => Error::Io {
                broker: addr.to_owned(),
                source: e,
            },
        },
    }
}

fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let connect_err = |source| Error::Connect {
        broker: addr.to_owned(),
        source,
    };
    let addrs: Vec<_> = addr.to_socket_addrs().map_err(connect_err)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for sa in addrs {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true).map_err(connect_err)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(connect_err(last))
}

fn tls_handshake(
    addr: &str,
    mut tcp: TcpStream,
    tls: Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Config(format!("{host:?} is not a valid TLS server name")))?;
    let mut conn = rustls::ClientConnection::new(tls, name).map_err(|source| Error::Tls {
        broker: addr.to_owned(),
        source,
    })?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                broker: addr.to_owned(),
                what: "TLS handshake",
                timeout_ms: 0,
            });
        }
        tcp.set_read_timeout(Some(left))
            .and_then(|()| tcp.set_write_timeout(Some(left)))
            .map_err(|source| Error::Io {
                broker: addr.to_owned(),
                source,
            })?;
        conn.complete_io(&mut tcp)
            .map_err(|e| io_error(addr, e, "TLS handshake", left))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The API's name for messages.
pub(crate) fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::OffsetCommit) => "OffsetCommit",
        Ok(ApiKey::OffsetFetch) => "OffsetFetch",
        Ok(ApiKey::FindCoordinator) => "FindCoordinator",
        Ok(ApiKey::SaslHandshake) => "SaslHandshake",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        Ok(ApiKey::SaslAuthenticate) => "SaslAuthenticate",
        _ => "a request",
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use kafka_protocol::messages::MetadataRequest;

    use super::*;

    /// A fake peer: accepts one connection, reads one request frame, then writes `reply`
    /// (built from the request's correlation id) and closes.
    fn fake_peer(
        reply: impl FnOnce(i32) -> Vec<u8> + Send + 'static,
    ) -> (Conn, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut req).unwrap();
            let correlation_id = i32::from_be_bytes([req[4], req[5], req[6], req[7]]);
            s.write_all(&reply(correlation_id)).unwrap();
        });
        let tcp = TcpStream::connect(addr).unwrap();
        (Conn::from_tcp(&addr.to_string(), tcp, 1 << 20), peer)
    }

    fn metadata(conn: &mut Conn) -> Result<kafka_protocol::messages::MetadataResponse> {
        conn.request_at(&MetadataRequest::default(), 1, Duration::from_secs(5))
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A valid MetadataResponse v1 with no brokers and no topics.
    fn empty_metadata_v1(correlation_id: i32) -> Vec<u8> {
        let mut body = correlation_id.to_be_bytes().to_vec();
        body.extend_from_slice(&0i32.to_be_bytes()); // brokers
        body.extend_from_slice(&(-1i32).to_be_bytes()); // controller id
        body.extend_from_slice(&0i32.to_be_bytes()); // topics
        frame(&body)
    }

    #[test]
    fn a_well_formed_response_decodes() {
        let (mut conn, peer) = fake_peer(empty_metadata_v1);
        let resp = metadata(&mut conn).unwrap();
        assert!(resp.brokers.is_empty() && resp.topics.is_empty());
        peer.join().unwrap();
    }

    #[test]
    fn a_wrong_correlation_id_is_a_bad_frame() {
        let (mut conn, peer) = fake_peer(|id| empty_metadata_v1(id + 7));
        let err = metadata(&mut conn).unwrap_err();
        assert!(
            matches!(&err, Error::BadFrame { reason, .. } if reason.contains("correlation id")),
            "{err}"
        );
        assert!(
            err.to_string().contains("127.0.0.1:"),
            "names the broker: {err}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_allocation() {
        let (mut conn, peer) = fake_peer(|_| 0x7fff_fff0u32.to_be_bytes().to_vec());
        let err = metadata(&mut conn).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    len: 0x7fff_fff0,
                    max: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_negative_length_prefix_is_a_bad_frame() {
        let (mut conn, peer) = fake_peer(|_| (-5i32).to_be_bytes().to_vec());
        let err = metadata(&mut conn).unwrap_err();
        assert!(matches!(err, Error::BadFrame { .. }), "{err}");
        peer.join().unwrap();
    }

    #[test]
    fn a_truncated_frame_is_a_bad_frame() {
        let (mut conn, peer) = fake_peer(|id| {
            let mut f = empty_metadata_v1(id);
            f.truncate(f.len() - 3);
            f
        });
        let err = metadata(&mut conn).unwrap_err();
        assert!(
            matches!(&err, Error::BadFrame { reason, .. } if reason.contains("truncated")),
            "{err}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_frame_with_a_short_body_is_a_bad_frame() {
        // The frame is complete but its body ends in the middle of the topic array.
        let (mut conn, peer) = fake_peer(|id| {
            let mut body = id.to_be_bytes().to_vec();
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes()); // one topic, then nothing
            frame(&body)
        });
        let err = metadata(&mut conn).unwrap_err();
        assert!(
            matches!(&err, Error::BadFrame { reason, .. } if reason.contains("cannot decode")),
            "{err}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_closed_connection_is_a_retryable_io_error() {
        let (mut conn, peer) = fake_peer(|_| Vec::new());
        let err = metadata(&mut conn).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.is_retryable(),
            "{err}"
        );
        peer.join().unwrap();
    }

    #[test]
    fn a_refused_connection_names_the_broker() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let config = Config::new(&addr, "t").unwrap();
        let err = Conn::open(&addr, &config).unwrap_err();
        assert!(
            matches!(err, Error::Connect { .. }) && err.is_retryable(),
            "{err}"
        );
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
