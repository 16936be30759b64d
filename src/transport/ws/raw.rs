//! A WebSocket on a plain TCP socket that the fan-out may write to directly.
//!
//! [`RawSocket`] owns the socket's write side: an ordered queue of whole
//! frames and `try_write_vectored`. Three writers share it, each appending
//! whole frames under its lock, so frames never interleave:
//! - the room's fan-out, through [`Direct`]: it writes the room's shared,
//!   pre-framed bytes at once when the socket takes them, and leaves the
//!   rest queued for the writer (the outbox then routes everything through
//!   the writer until it has drained);
//! - the connection's writer ([`RawTransport`]): its batches, then it waits
//!   for the socket to drain;
//! - tungstenite (through [`SharedIo`]), which still reads the client's
//!   frames and writes what the protocol needs: pings, pongs and the close.
//!
//! Behind TLS or anything else hyper hands over as an opaque upgrade, the
//! plain path in `super` (tungstenite's own sink) is used instead.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use lockstep_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::hub::Outgoing;
use crate::session::{Direct, DirectWrite, Transport, Wire};
use crate::util::ws_frame;

/// Slices handed to one `writev` (the kernel's limit is 1,024).
const MAX_SLICES: usize = 64;

#[derive(Debug, Default)]
struct Queue {
    bufs: VecDeque<Bytes>,
    /// The socket failed: nothing more is written.
    broken: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct RawSocket {
    tcp: TcpStream,
    queue: Mutex<Queue>,
}

impl RawSocket {
    pub(super) fn new(tcp: TcpStream) -> Arc<Self> {
        Arc::new(RawSocket { tcp, queue: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what is queued until the socket would block. `Ok(true)` when
    /// the queue is empty.
    fn write_queued(&self, q: &mut Queue) -> io::Result<bool> {
        if q.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        while !q.bufs.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = q.bufs.iter().take(MAX_SLICES).zip(slices.iter_mut()).map(|(b, s)| *s = IoSlice::new(b)).count();
            match self.tcp.try_write_vectored(&slices[..n]) {
                Ok(0) => {
                    q.broken = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(mut written) => {
                    while written > 0 {
                        let front = q.bufs.front_mut().expect("written bytes were queued");
                        let take = written.min(front.len());
                        front.advance(take);
                        written -= take;
                        if front.is_empty() {
                            q.bufs.pop_front();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    q.broken = true;
                    q.bufs.clear();
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Appends whole frames and writes what the socket takes now.
    fn append(&self, frames: impl IntoIterator<Item = Bytes>) -> io::Result<bool> {
        let mut q = self.lock();
        if q.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        q.bufs.extend(frames);
        self.write_queued(&mut q)
    }

    /// Writes everything queued, waiting for the socket as needed.
    async fn drain(&self) -> io::Result<()> {
        loop {
            if self.write_queued(&mut self.lock())? {
                return Ok(());
            }
            self.tcp.writable().await?;
        }
    }

    /// Bytes waiting in the queue (tests).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().bufs.iter().map(Bytes::len).sum()
    }
}

impl Direct for RawSocket {
    fn try_write(&self, outs: &[&Arc<Outgoing>]) -> DirectWrite {
        match self.append(outs.iter().map(|o| o.ws_frame().clone())) {
            Ok(true) => DirectWrite::Done,
            Ok(false) => DirectWrite::Pending,
            Err(_) => DirectWrite::Refused,
        }
    }
}

/// The socket as tungstenite sees it: reads from the socket, writes through
/// the [`RawSocket`]'s queue (every write is taken whole).
#[derive(Debug)]
pub(super) struct SharedIo(pub(super) Arc<RawSocket>);

impl AsyncRead for SharedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let tcp = &self.0.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(self.0.append([Bytes::copy_from_slice(buf)]).map(|_| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.0.write_queued(&mut self.0.lock())? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.0.tcp.poll_write_ready(cx))?;
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let _ = socket2::SockRef::from(&self.0.tcp).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// The writer's side of a raw socket: frames into the queue, then drained;
/// pings and the close through tungstenite (so its state knows of them).
pub(super) struct RawTransport {
    pub(super) raw: Arc<RawSocket>,
    pub(super) sink: SplitSink<WebSocketStream<SharedIo>, Message>,
    pub(super) pings: Arc<super::PingTimer>,
}

impl Transport for RawTransport {
    async fn send(&mut self, frames: Vec<Wire>) -> io::Result<()> {
        self.raw.append(frames.iter().map(|f| match f {
            Wire::Binary(b) => ws_frame::frame(ws_frame::BINARY, b),
            Wire::Text(t) => ws_frame::frame(ws_frame::TEXT, t),
        }))?;
        self.raw.drain().await
    }

    fn keepalive_interval(&self) -> Option<std::time::Duration> {
        Some(super::PING_INTERVAL)
    }

    async fn keepalive(&mut self) -> io::Result<()> {
        self.sink.send(Message::Ping(self.pings.ping())).await.map_err(io::Error::other)
    }

    async fn close(&mut self, code: ErrorCode, reason: &str) {
        super::close(&mut self.sink, code, reason).await;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use lockstep_protocol::{ServerMsg, ViewerCount, decode_server};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::clock::ServerClock;
    use crate::session::{Outbox, write_loop};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A connected pair: (server side, client side), the server's send
    /// buffer as small as the kernel allows, so that it fills quickly.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        socket2::SockRef::from(&client).set_recv_buffer_size(4096).unwrap();
        (server, client)
    }

    fn count(n: u32) -> Arc<Outgoing> {
        Outgoing::new(ServerMsg::ViewerCount(ViewerCount { count: n }))
    }

    /// An outgoing message of about `len` bytes carrying `n`.
    fn big(n: u32, len: usize) -> Arc<Outgoing> {
        let text = format!("{n:08}{}", "x".repeat(len));
        Outgoing::new(ServerMsg::Error(lockstep_protocol::ErrorMsg::new(ErrorCode::Internal, &text, n)))
    }

    #[tokio::test]
    async fn a_direct_write_puts_the_rooms_frame_on_the_wire() {
        let (server, mut client) = pair().await;
        let raw = RawSocket::new(server);
        let out = count(7);
        assert_eq!(raw.try_write(&[&out, &count(8)]), DirectWrite::Done);
        assert_eq!(raw.queued(), 0);
        let want = [out.ws_frame().clone(), count(8).ws_frame().clone()].concat();
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want, "the pre-framed bytes, unchanged");
    }

    /// The socket takes part of a frame, then nothing: the rest waits in the
    /// queue, later writes queue behind it, and a drain delivers every byte
    /// in order once the peer reads.
    #[tokio::test]
    async fn partial_writes_and_would_block_keep_the_rest_in_order() {
        let (server, mut client) = pair().await;
        let raw = RawSocket::new(server);
        let outs: Vec<_> = (0..400).map(|n| big(n, 997)).collect();
        let mut results = Vec::new();
        for o in &outs {
            results.push(raw.try_write(&[o]));
        }
        let first_pending = results.iter().position(|r| *r == DirectWrite::Pending).expect("the socket filled up");
        assert!(first_pending > 0, "the first frames went straight out");
        assert!(results[first_pending..].iter().all(|r| *r == DirectWrite::Pending), "nothing overtakes the queue");
        assert!(raw.queued() > 0);
        let want: Vec<u8> = outs.iter().flat_map(|o| o.ws_frame().to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; want.len()];
            client.read_exact(&mut got).await.unwrap();
            got == want
        });
        raw.drain().await.unwrap();
        assert_eq!(raw.queued(), 0);
        assert!(reader.await.unwrap(), "every byte, in order");
    }

    /// The whole path: the fan-out writes directly while it can; when the
    /// socket blocks, the outbox hands off to the writer, which drains, and
    /// every later message waits its turn; the client reads them all in
    /// order.
    #[tokio::test]
    async fn the_fan_out_hands_off_to_the_writer_without_reordering() {
        let (server, client) = pair().await;
        let raw = RawSocket::new(server);
        let ws = WebSocketStream::from_raw_socket(SharedIo(raw.clone()), Role::Server, None).await;
        let (sink, _stream) = ws.split();
        let outbox = Arc::new(Outbox::new(100_000));
        outbox.set_direct(raw.clone());
        let writer = tokio::spawn(write_loop(
            RawTransport { raw: raw.clone(), sink, pings: super::super::PingTimer::new(ServerClock::new()) },
            outbox.clone(),
            ServerClock::new(),
        ));
        const N: u32 = 3000;
        let mut queued_at = None;
        for n in 0..N {
            assert!(outbox.deliver(&[&big(n, 200)]));
            if queued_at.is_none() && raw.queued() > 0 {
                queued_at = Some(n);
            }
        }
        assert!(queued_at.is_some(), "the socket blocked at some point");
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        // The writer's keep-alive pings may come between the messages.
        let mut client = client.by_ref().filter(|m| std::future::ready(!matches!(m, Ok(Message::Ping(_)))));
        for n in 0..N {
            let Some(Ok(Message::Binary(b))) = client.next().await else { panic!("message {n} missing") };
            match decode_server(&b).unwrap() {
                ServerMsg::Error(e) => assert_eq!(e.request_id, n, "in order"),
                other => panic!("unexpected {other:?}"),
            }
        }
        outbox.close(ErrorCode::ShuttingDown, "bye");
        tokio::time::timeout(std::time::Duration::from_secs(5), writer).await.unwrap().unwrap();
        let Some(Ok(Message::Binary(b))) = client.next().await else { panic!("no closing error") };
        assert!(
            matches!(decode_server(&b).unwrap(), ServerMsg::Error(e) if e.code == ErrorCode::ShuttingDown.as_u16())
        );
        let Some(Ok(Message::Close(Some(f)))) = client.next().await else { panic!("no close") };
        assert_eq!(u16::from(f.code), ErrorCode::ShuttingDown.as_u16());
    }
}
