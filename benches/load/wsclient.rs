//! A minimal WebSocket client for the load generator.
//!
//! tokio-tungstenite reads through `AsyncRead`, which cannot return the
//! kernel's receive timestamp, and costs about 20 µs of CPU per message on
//! this machine (see `../shared/peers/README.md`). This client does the
//! HTTP/1.1 upgrade itself, reads with `recvmsg` and `SO_TIMESTAMPNS` (so each
//! read carries the time the kernel queued its last segment, CLOCK_REALTIME),
//! parses unmasked server frames in place and writes masked client frames.
//! Fragmented messages and extensions are not supported (none of the servers
//! under test sends them).

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// What a frame carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Text,
    Binary,
    Close,
}

/// One received data frame: its bounds in the connection's buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) op: Op,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A connected WebSocket.
#[derive(Debug)]
pub(crate) struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Parsed up to here.
    pos: usize,
    /// Valid bytes end here.
    len: usize,
    /// Kernel receive time of the last read (CLOCK_REALTIME ns), if the kernel gave one.
    pub(crate) kernel_ns: Option<u64>,
    /// User-space receive time of the last read (CLOCK_REALTIME ns).
    pub(crate) user_ns: u64,
    cmsg: Vec<u8>,
    mask_state: u32,
    out: Vec<u8>,
}

pub(crate) fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Ws {
    /// Connects to `addr` and upgrades at `path` (`protocol`: the subprotocol to request).
    pub(crate) async fn connect(addr: std::net::SocketAddr, path: &str, protocol: Option<&str>) -> io::Result<Ws> {
        Self::connect_with(addr, path, protocol, "").await
    }

    /// [`Ws::connect`] with more request header lines (each ending in CRLF).
    pub(crate) async fn connect_with(
        addr: std::net::SocketAddr,
        path: &str,
        protocol: Option<&str>,
        headers: &str,
    ) -> io::Result<Ws> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        let proto = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}{headers}\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        let head_end = loop {
            if len == buf.len() {
                return Err(io::Error::other("upgrade response too long"));
            }
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during upgrade"));
            }
            len += n;
            if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]);
        if !head.starts_with("HTTP/1.1 101") {
            let line = head.lines().next().unwrap_or_default().to_owned();
            return Err(io::Error::other(format!("upgrade refused: {line}")));
        }
        let seed = (addr.port() as u32) ^ (realtime_ns() as u32) | 1;
        Ok(Ws {
            stream,
            buf,
            pos: head_end,
            len,
            kernel_ns: None,
            user_ns: realtime_ns(),
            cmsg: nix::cmsg_space!(TimeSpec),
            mask_state: seed,
            out: Vec::with_capacity(256),
        })
    }

    /// Shrinks the socket's receive buffer (a reader that falls behind fills it sooner).
    pub(crate) fn shrink_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.stream, sockopt::RcvBuf, &bytes).map_err(io::Error::from)
    }

    /// The payload of a frame returned by [`Ws::next_frame`].
    pub(crate) fn payload(&self, f: &Frame) -> &[u8] {
        &self.buf[f.start..f.end]
    }

    /// The next complete frame already buffered (pings are answered here).
    /// Call [`Ws::read`] when it returns `None`.
    pub(crate) async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let avail = &self.buf[self.pos..self.len];
            if avail.len() < 2 {
                return Ok(None);
            }
            let op = avail[0] & 0x0f;
            let masked = avail[1] & 0x80 != 0;
            let (plen, hlen) = match avail[1] & 0x7f {
                126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                127 if avail.len() >= 10 => (u64::from_be_bytes(avail[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => return Ok(None),
                n => (n as usize, 2),
            };
            if masked {
                return Err(io::Error::other("server frames must not be masked"));
            }
            if plen > 1 << 20 {
                return Err(io::Error::other("frame too large"));
            }
            if avail.len() < hlen + plen {
                if self.pos + hlen + plen > self.buf.len() {
                    self.compact(hlen + plen);
                }
                return Ok(None);
            }
            let start = self.pos + hlen;
            let end = start + plen;
            self.pos = end;
            match op {
                1 => return Ok(Some(Frame { op: Op::Text, start, end })),
                2 => return Ok(Some(Frame { op: Op::Binary, start, end })),
                8 => return Ok(Some(Frame { op: Op::Close, start, end })),
                9 => {
                    let data = self.buf[start..end].to_vec();
                    self.send(0xA, &data).await?;
                }
                _ => {}
            }
        }
    }

    /// Moves unparsed bytes to the front, growing the buffer to hold `need`.
    fn compact(&mut self, need: usize) {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() < need {
            self.buf.resize(need.next_power_of_two(), 0);
        }
    }

    /// Waits for data and reads once (recording receive times). `Ok(false)` at EOF.
    /// Cancel safe: only readiness is awaited.
    pub(crate) async fn read(&mut self) -> io::Result<bool> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.len == self.buf.len() {
            self.compact(self.buf.len() * 2);
        }
        loop {
            self.stream.readable().await?;
            let fd = self.stream.as_raw_fd();
            let (buf, cmsg) = (&mut self.buf[self.len..], &mut self.cmsg);
            let res = self.stream.try_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let msg = recvmsg::<()>(fd, &mut iov, Some(cmsg), MsgFlags::empty()).map_err(io::Error::from)?;
                let mut ts = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmTimestampns(t) = c {
                            ts = Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
                        }
                    }
                }
                Ok((msg.bytes, ts))
            });
            match res {
                Ok((0, _)) => return Ok(false),
                Ok((n, ts)) => {
                    self.user_ns = realtime_ns();
                    self.kernel_ns = ts;
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks only need to be unpredictable to intermediaries.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    /// Appends one masked frame with opcode `op` to `out`.
    fn frame_into(&mut self, out: &mut Vec<u8>, op: u8, payload: &[u8]) {
        let mask = self.next_mask();
        out.push(0x80 | op);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }

    /// Sends one masked frame with opcode `op` (1 text, 2 binary, 8 close, 0xA pong).
    pub(crate) async fn send(&mut self, op: u8, payload: &[u8]) -> io::Result<()> {
        self.send_many(op, &[payload]).await
    }

    /// Sends several frames with opcode `op` in one write.
    pub(crate) async fn send_many(&mut self, op: u8, payloads: &[&[u8]]) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for p in payloads {
            self.frame_into(&mut out, op, p);
        }
        let r = self.stream.write_all(&out).await;
        self.out = out;
        r
    }

    pub(crate) async fn send_text(&mut self, s: &str) -> io::Result<()> {
        self.send(1, s.as_bytes()).await
    }

    pub(crate) async fn send_binary(&mut self, b: &[u8]) -> io::Result<()> {
        self.send(2, b).await
    }
}
