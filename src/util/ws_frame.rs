//! Server-side WebSocket frame headers (RFC 6455 §5.2). A server's frames
//! are unmasked, so a message's frame is the same bytes for every viewer:
//! it can be made once per room and written to every socket as is.

use bytes::{BufMut, Bytes, BytesMut};

/// Opcode of a text frame.
pub(crate) const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub(crate) const BINARY: u8 = 0x2;

/// The header of a final, unmasked frame of `len` payload bytes: the bytes
/// and how many of them are used (2, 4 or 10).
pub(crate) fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// A whole final, unmasked frame: header and payload in one buffer.
pub(crate) fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (h, n) = header(opcode, payload.len());
    let mut b = BytesMut::with_capacity(n + payload.len());
    b.put_slice(&h[..n]);
    b.put_slice(payload);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(&frame(BINARY, b"abc")[..], &[0x82, 3, b'a', b'b', b'c']);
        let (h, n) = header(TEXT, 125);
        assert_eq!(&h[..n], &[0x81, 125]);
        let (h, n) = header(BINARY, 126);
        assert_eq!(&h[..n], &[0x82, 126, 0, 126]);
        let (h, n) = header(BINARY, 65_535);
        assert_eq!(&h[..n], &[0x82, 126, 0xff, 0xff]);
        let (h, n) = header(BINARY, 65_536);
        assert_eq!(&h[..n], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    /// What tungstenite (the client side of the tests) reads back.
    #[test]
    fn tungstenite_reads_our_frames() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 1, 125, 126, 300, 70_000] {
            let payload = vec![7u8; len];
            let f = frame(BINARY, &payload);
            let mut cur = std::io::Cursor::new(&f[..]);
            let (hdr, plen) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert!(hdr.is_final && hdr.mask.is_none());
            assert_eq!(plen as usize, len);
            assert_eq!(cur.position() as usize + len, f.len());
        }
    }
}
