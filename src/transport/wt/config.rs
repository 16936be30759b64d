//! The QUIC endpoint's settings: TLS with the WebTransport ALPN, transport
//! parameters sized for sessions of a few hundred bytes a second, and a UDP
//! socket with large buffers.

use std::net::{SocketAddr, SocketAddrV6};

use wtransport::ServerConfig;
use wtransport::config::states::WantsIdentity;
use wtransport::config::{Ipv6DualStackConfig, ServerConfigBuilder};

use super::{IDLE_TIMEOUT, KEEP_ALIVE};
use crate::cert::{CertError, CertPair};

/// The endpoint configuration for `addr` serving `certs`: TLS 1.3 with the
/// WebTransport ALPN, [`IDLE_TIMEOUT`], [`KEEP_ALIVE`]. An IPv6 address is
/// bound dual stack, so `[::]` also accepts IPv4.
pub(crate) fn server_config(addr: SocketAddr, certs: &CertPair) -> Result<ServerConfig, CertError> {
    let builder = match addr {
        SocketAddr::V6(v6) => ServerConfig::builder()
            .with_bind_address_v6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0), Ipv6DualStackConfig::Allow),
        SocketAddr::V4(_) => ServerConfig::builder().with_bind_address(addr),
    };
    finish_config(builder, certs)
}

pub(super) fn finish_config(
    builder: ServerConfigBuilder<WantsIdentity>,
    certs: &CertPair,
) -> Result<ServerConfig, CertError> {
    let mut tls = certs.tls_config()?;
    tls.alpn_protocols = vec![wtransport::tls::WEBTRANSPORT_ALPN.to_vec()];
    let mut transport = wtransport::quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s is a valid idle timeout")));
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // quinn's defaults are for bulk transfers; a session carries a few
    // hundred bytes a second (see the constants' comments for each number).
    transport
        .max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    Ok(builder.with_custom_tls_and_transport(tls, transport).build())
}

/// Bidirectional streams a client may have open at once: the HTTP/3
/// `CONNECT` request of the session, the one protocol stream, and two more
/// (refused ones are closed as they come). quinn-proto sets aside a stream
/// table entry for every stream the peer may open, at connection start: its
/// default (100 bidirectional and 100 unidirectional) is about 7 KiB per
/// session.
const MAX_BIDI_STREAMS: u32 = 4;
/// Unidirectional streams a client may have open at once: HTTP/3 needs
/// three (control, QPACK encoder and decoder, RFC 9114 §6.2); the protocol
/// uses none; the rest is headroom.
const MAX_UNI_STREAMS: u32 = 8;
/// Bytes a client may send ahead on one stream: eight `MAX_FRAME` (8 KiB)
/// frames; a `Hello` is at most about 4.4 KB. quinn's default (1.25 MB) is
/// for bulk transfers; this bounds what a client can make the server buffer.
const STREAM_RECEIVE_WINDOW: u32 = 64 * 1024;
/// Bytes a client may send ahead over all its streams (the protocol stream
/// and the small HTTP/3 ones); quinn's default is unlimited.
const RECEIVE_WINDOW: u32 = 128 * 1024;
/// Bytes the server keeps unacknowledged over all of a session's streams
/// (default 10 MB). At 256 KiB a 100 ms round trip still carries 2.5 MB/s,
/// far above a session's traffic; a client that stops reading blocks its
/// writer, its outbox fills and it is closed as a slow consumer instead.
const SEND_WINDOW: u64 = 256 * 1024;
/// Inbound datagrams queued until the session reads them: `Ping` and
/// `Report`, at most `MAX_DATAGRAM` (1200) bytes each, rate limited; the
/// default is 1.25 MB. Also advertised as the largest datagram frame taken.
const DATAGRAM_RECEIVE_BUFFER: usize = 16 * 1024;
/// Outbound datagrams queued while the congestion window is full: ticks,
/// pongs and change copies of 30–100 bytes, so this is still about 200 of
/// them; when full quinn drops the oldest, which suits ticks (latest wins;
/// changes also go on the stream). Default 1 MiB.
const DATAGRAM_SEND_BUFFER: usize = 16 * 1024;

/// Receive buffer asked for the QUIC socket. A fan-out to thousands of
/// sessions comes back as thousands of ACKs within a millisecond or two; the
/// kernel default (about 208 KiB) overflows and drops them, and with them
/// the hosts' commands, which QUIC then recovers only after a probe timeout
/// (hundreds of milliseconds). Linux caps the request at
/// `net.core.rmem_max` (raise it for large rooms).
const UDP_RECV_BUFFER: usize = 8 << 20;
/// Send buffer asked for the QUIC socket (capped at `net.core.wmem_max`).
const UDP_SEND_BUFFER: usize = 4 << 20;

/// The QUIC socket at `addr` (dual stack for IPv6), with large buffers.
pub(super) fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the QUIC receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_SEND_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the QUIC send buffer");
    }
    socket.bind(&addr.into())?;
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "QUIC socket buffers"
    );
    Ok(socket.into())
}
