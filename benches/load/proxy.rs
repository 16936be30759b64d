//! Userspace impairment proxies (there is no `tc netem` here): every packet
//! (UDP) or every read chunk (TCP) is delayed by a uniform random delay in
//! `[delay - jitter, delay + jitter]` per direction, and `loss` of them are
//! lost. UDP packets are dropped (QUIC recovers what needs recovering) and
//! may be reordered. TCP cannot lose bytes in userspace, so a "lost" chunk is
//! modelled as a retransmission: it is held back an extra `rto` and, TCP being
//! ordered, so is everything behind it.

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Impairment settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Impair {
    pub(crate) delay: Duration,
    pub(crate) jitter: Duration,
    pub(crate) loss: f64,
    /// Extra hold of a "lost" TCP chunk.
    pub(crate) rto: Duration,
}

/// A small, fast, non-cryptographic PRNG.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

fn rng() -> Rng {
    Rng::new(SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
}

impl Impair {
    fn sample(&self, r: &mut Rng) -> Duration {
        let lo = self.delay.saturating_sub(self.jitter).as_secs_f64();
        let hi = (self.delay + self.jitter).as_secs_f64();
        Duration::from_secs_f64(lo + (hi - lo) * r.unit())
    }
}

/// Counters of what the proxies did.
#[derive(Debug, Default)]
pub(crate) struct ProxyStats {
    pub(crate) packets: AtomicU64,
    pub(crate) lost: AtomicU64,
}

// ------------------------------------------------------------------ TCP

/// Listens on loopback and forwards every connection to `upstream` with impairment.
pub(crate) async fn tcp(upstream: SocketAddr, imp: Impair, stats: Arc<ProxyStats>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let stats = stats.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(upstream).await else { return };
                let _ = up.set_nodelay(true);
                let _ = down.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pipe(dr, uw, imp, stats.clone()));
                pipe(ur, dw, imp, stats).await;
            });
        }
    });
    Ok(addr)
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    imp: Impair,
    stats: Arc<ProxyStats>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut rng = rng();
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        stats.packets.fetch_add(1, Ordering::Relaxed);
        let mut at = Instant::now() + imp.sample(&mut rng);
        if rng.unit() < imp.loss {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            at += imp.rto;
        }
        // In order: nothing overtakes what was read before it.
        at = at.max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

// ------------------------------------------------------------------ UDP

struct Due {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    via: Arc<UdpSocket>,
    data: Vec<u8>,
}
impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq)) // min-heap
    }
}

/// One scheduler sends every delayed packet when it is due.
fn scheduler() -> mpsc::UnboundedSender<Due> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Due>();
    tokio::spawn(async move {
        let mut heap = BinaryHeap::new();
        loop {
            let next = heap.peek().map(|d: &Due| d.at);
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => heap.push(d),
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|d| d.at <= now) {
                        let d = heap.pop().expect("peeked");
                        let _ = d.via.try_send_to(&d.data, d.to);
                    }
                }
            }
        }
    });
    tx
}

/// Listens on `[::1]` (or 127.0.0.1 for an IPv4 upstream) and forwards UDP
/// between each client address and `upstream`, with impairment.
pub(crate) async fn udp(upstream: SocketAddr, imp: Impair, stats: Arc<ProxyStats>) -> std::io::Result<SocketAddr> {
    let bind: SocketAddr = if upstream.is_ipv6() { "[::1]:0".parse().unwrap() } else { "127.0.0.1:0".parse().unwrap() };
    let front = Arc::new(UdpSocket::bind(bind).await?);
    let addr = front.local_addr()?;
    let sched = scheduler();
    tokio::spawn(async move {
        let mut ups: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut rng = rng();
        let mut seq = 0u64;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            let up = match ups.get(&from) {
                Some(u) => u.clone(),
                None => {
                    let Ok(u) = UdpSocket::bind(bind).await else { continue };
                    let u = Arc::new(u);
                    ups.insert(from, u.clone());
                    // Server → this client.
                    let (u2, front2, sched2, stats2) = (u.clone(), front.clone(), sched.clone(), stats.clone());
                    tokio::spawn(async move {
                        let mut rng = self::rng();
                        let mut seq = 0u64;
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, _)) = u2.recv_from(&mut buf).await {
                            stats2.packets.fetch_add(1, Ordering::Relaxed);
                            if rng.unit() < imp.loss {
                                stats2.lost.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            seq += 1;
                            let at = Instant::now() + imp.sample(&mut rng);
                            let d = Due { at, seq, to: from, via: front2.clone(), data: buf[..n].to_vec() };
                            if sched2.send(d).is_err() {
                                return;
                            }
                        }
                    });
                    u
                }
            };
            stats.packets.fetch_add(1, Ordering::Relaxed);
            if rng.unit() < imp.loss {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            seq += 1;
            let at = Instant::now() + imp.sample(&mut rng);
            let _ = sched.send(Due { at, seq, to: upstream, via: up, data: buf[..n].to_vec() });
        }
    });
    Ok(addr)
}
