//! The simulator's own accuracy, through real sockets on loopback: the
//! delay, the bandwidth and the window each bound what gets through, and
//! nothing is ever delivered early. The lower bounds are exact properties
//! of the simulator (asserted strictly); how late it runs is printed, and
//! only bounded generously so that a stuck simulator fails instead of
//! hanging.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skein_linksim::{LinkParams, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts an echo server and a simulator in front of it; returns the
/// simulator's address.
async fn proxy_to_echo(params: LinkParams) -> SocketAddr {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let sim = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let addr = sim.local_addr().expect("addr");
    tokio::spawn(serve(sim, echo_addr, params));
    addr
}

/// Starts a sink that counts bytes and a simulator in front of it.
async fn proxy_to_sink(
    params: LinkParams,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<Instant>) {
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let sink_addr = sink.local_addr().expect("addr");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = sink.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = done_tx.send(Instant::now());
    });
    let sim = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let addr = sim.local_addr().expect("addr");
    tokio::spawn(serve(sim, sink_addr, params));
    (addr, done_rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_take_twice_the_one_way_delay() {
    let delay = Duration::from_millis(40);
    let addr = proxy_to_echo(LinkParams {
        delay,
        bandwidth: None,
        window: None,
    })
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    let rounds = 10;
    for i in 0..rounds {
        let start = Instant::now();
        s.write_all(&[i as u8]).await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("read");
        let rtt = start.elapsed();
        assert_eq!(b[0], i as u8);
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} shorter than {:?}",
            2 * delay
        );
        worst = worst.max(rtt);
        total += rtt;
    }
    let mean = total / rounds;
    println!(
        "round trip: configured {:?}, mean {mean:?}, worst {worst:?}",
        2 * delay
    );
    assert!(
        worst < 2 * delay + Duration::from_secs(2),
        "simulator stuck: {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bandwidth_paces_a_bulk_transfer() {
    // 1 Mbit/s: 125 000 bytes take one second.
    let bps = 1_000_000u64;
    let bytes = 125_000usize;
    let (addr, done) = proxy_to_sink(LinkParams {
        delay: Duration::from_millis(5),
        bandwidth: Some(bps),
        window: None,
    })
    .await;
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&vec![7u8; bytes]).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let end = done.await.expect("sink done");
    let elapsed = end - start;
    let ideal = Duration::from_secs_f64(bytes as f64 * 8.0 / bps as f64);
    let rate = bytes as f64 * 8.0 / elapsed.as_secs_f64();
    println!("bulk: ideal {ideal:?}, took {elapsed:?}, {rate:.0} bit/s of {bps}");
    assert!(
        elapsed >= ideal,
        "faster than the link: {elapsed:?} < {ideal:?}"
    );
    assert!(
        elapsed < ideal + Duration::from_secs(5),
        "simulator stuck: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_share_the_bandwidth() {
    // Two connections at once through a 1 Mbit/s link: together they get
    // 1 Mbit/s, not 1 Mbit/s each.
    let bps = 1_000_000u64;
    let each = 62_500usize;
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let sink_addr = sink.local_addr().expect("addr");
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            let done = done_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = done.send(Instant::now());
            });
        }
    });
    let sim = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    let addr = sim.local_addr().expect("addr");
    tokio::spawn(serve(
        sim,
        sink_addr,
        LinkParams {
            delay: Duration::from_millis(5),
            bandwidth: Some(bps),
            window: None,
        },
    ));
    let start = Instant::now();
    let senders: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(&vec![3u8; each]).await.expect("write");
                s.shutdown().await.expect("shutdown");
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let a = done_rx.recv().await.expect("first done");
    let b = done_rx.recv().await.expect("second done");
    let elapsed = a.max(b) - start;
    let ideal = Duration::from_secs_f64((2 * each) as f64 * 8.0 / bps as f64);
    println!("shared: ideal {ideal:?}, took {elapsed:?}");
    assert!(
        elapsed >= ideal,
        "the connections got more than the link: {elapsed:?} < {ideal:?}"
    );
    assert!(
        elapsed < ideal + Duration::from_secs(5),
        "simulator stuck: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_bounds_bytes_in_flight() {
    // 10 KiB in flight and 50 ms each way: every 10 KiB waits at least one
    // delay before the next can be read.
    let delay = Duration::from_millis(50);
    let window = 10 << 10;
    let bytes = 100 << 10;
    let (addr, done) = proxy_to_sink(LinkParams {
        delay,
        bandwidth: None,
        window: Some(window),
    })
    .await;
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&vec![1u8; bytes]).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let end = done.await.expect("sink done");
    let elapsed = end - start;
    let floor = delay * (bytes / window) as u32;
    println!("window: floor {floor:?}, took {elapsed:?}");
    assert!(
        elapsed >= floor,
        "more than the window in flight: {elapsed:?} < {floor:?}"
    );
    assert!(
        elapsed < floor + Duration::from_secs(5),
        "simulator stuck: {elapsed:?}"
    );
}
