//! Seek fan-out to N WebSocket viewers on loopback, in one process.
//!
//! `cargo bench --bench fanout -- [viewers] [seeks]` (defaults 1000 and 100).
//! The host sends a seek; every viewer records when the `TimelineChanged`
//! arrived. Latencies are measured with one monotonic clock (the process's),
//! from just before the host's send to each viewer's receipt, so they include
//! the client tasks' own scheduling on the same two cores. Printed: per
//! delivery p50/p99/max, and per seek the time until the last viewer had it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use lockstep::config::Config;
use lockstep::server::Server;
use lockstep_protocol::{Action, ClientMsg, Command, Hello, PROTOCOL_VERSION, ServerMsg, decode_server, encode_client};
use tokio::sync::{Barrier, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};

async fn connect(
    url: &str,
    event: &str,
    device: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("lockstep.v1"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        event_id: event.into(),
        device_id: device.into(),
        token: None,
        caps: 0,
    });
    ws.send(Message::Binary(Bytes::from(encode_client(&hello)))).await.unwrap();
    loop {
        if let Some(Ok(Message::Binary(b))) = ws.next().await
            && let Ok(ServerMsg::Welcome(_)) = decode_server(&b)
        {
            return ws;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let viewers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seeks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(viewers, seeks));
}

async fn run(viewers: usize, seeks: u64) {
    let data_dir = std::env::temp_dir().join(format!("lockstep-bench-fanout-{}", std::process::id()));
    let cfg = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        quic_addr: "[::1]:0".parse().unwrap(),
        dev: true,
        data_dir: data_dir.clone(),
        msgs_per_sec: 10_000,
        msg_burst: 10_000,
        connects_per_ip_per_sec: 1_000_000,
        connect_burst: 1_000_000,
        ..Config::default()
    };
    let server = Server::bind(cfg).await.unwrap();
    let url = format!("ws://{}/api/live-stream/bench", server.http_addr());
    tokio::spawn(server.run(std::future::pending()));

    let mut host = connect(&url, "bench", "host").await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new(Barrier::new(viewers + 1));
    let t0 = Instant::now();
    for i in 0..viewers {
        let mut ws = connect(&url, "bench", &format!("v{i}")).await;
        let tx = tx.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            ready.wait().await;
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m
                    && let Ok(ServerMsg::TimelineChanged(c)) = decode_server(&b)
                {
                    let _ = tx.send((c.timeline.position_ms, Instant::now()));
                }
            }
        });
    }
    ready.wait().await;
    eprintln!("{viewers} viewers joined in {:?}", t0.elapsed());
    drop(tx);
    let mut per_delivery = Histogram::<u64>::new(3).unwrap();
    let mut per_seek = Histogram::<u64>::new(3).unwrap();
    for s in 1..=seeks {
        let cmd = ClientMsg::Command(Command { request_id: s as u32, action: Action::Seek { position_ms: s * 1000 } });
        let sent = Instant::now();
        host.send(Message::Binary(Bytes::from(encode_client(&cmd)))).await.unwrap();
        let mut got = 0;
        let mut last = sent;
        while got < viewers {
            let (pos, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivery").unwrap();
            if pos != s * 1000 {
                continue;
            }
            got += 1;
            per_delivery.record(at.duration_since(sent).as_micros() as u64).unwrap();
            last = last.max(at);
        }
        per_seek.record(last.duration_since(sent).as_micros() as u64).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("seek fan-out to {viewers} WebSocket viewers, {seeks} seeks (ms):");
    println!(
        "  per delivery: p50 {:.2}  p99 {:.2}  max {:.2}",
        ms(&per_delivery, 0.5),
        ms(&per_delivery, 0.99),
        per_delivery.max() as f64 / 1000.0
    );
    println!(
        "  last viewer:  p50 {:.2}  p99 {:.2}  max {:.2}",
        ms(&per_seek, 0.5),
        ms(&per_seek, 0.99),
        per_seek.max() as f64 / 1000.0
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
