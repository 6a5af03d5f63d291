//! Frames over std sockets: the 4-byte big-endian length prefix, read and written.
//!
//! Written here rather than taken from `vtp_core::frame`, so that this crate depends on no vtp
//! crate (vtp-core's own tests use it). Peers that parse what they read (a raw subscriber, a
//! raw author that reads its receipt) are `vtp_host::testing`'s.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads one frame (bounded by the stream's read timeout, if it has one).
pub fn read_frame(s: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// `payload` behind its 4-byte big-endian length prefix.
///
/// # Panics
///
/// If the payload is longer than a prefix can say (`u32::MAX` bytes).
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a payload below 4 GiB");
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Writes `payload` as one frame.
pub fn write_frame(s: &mut impl Write, payload: &[u8]) {
    s.write_all(&frame(payload)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_big_endian_length_then_the_payload_and_reads_back() {
        let framed = frame(b"hello");
        assert_eq!(framed, b"\0\0\0\x05hello");
        assert_eq!(read_frame(&mut &framed[..]).unwrap(), b"hello");
        let mut written = Vec::new();
        write_frame(&mut written, &[7; 300]);
        assert_eq!(&written[..4], &[0, 0, 1, 44]);
        assert_eq!(read_frame(&mut &written[..]).unwrap(), [7; 300]);
    }
}
