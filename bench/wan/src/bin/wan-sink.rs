//! `wan-sink --listen ADDR [--chunking] [--no-pipelining] [--expect N]`:
//! an SMTP server that accepts everything and keeps nothing, for the WAN
//! benchmark. It answers each batch of pipelined commands with one write,
//! as Postfix does, un-stuffs DATA and reads BDAT chunks, and counts
//! connections, transactions and recipients. With `--expect N`, once N
//! recipients have been delivered, it prints (and goes on serving until
//! killed) `recipients=N
//! transactions=T connections=C seconds=S` (from the first EHLO to the
//! last delivery).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use skein_smtp_codec::{Command, DataDecoder, Extensions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

struct Stats {
    connections: AtomicUsize,
    messages: AtomicUsize,
    recipients: AtomicUsize,
    first: std::sync::Mutex<Option<Instant>>,
    done: Notify,
    expect: usize,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut chunking, mut pipelining, mut expect) =
        (String::from("127.0.0.1:2600"), false, true, 0usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--chunking" => chunking = true,
            "--no-pipelining" => pipelining = false,
            "--expect" => {
                expect = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--expect N")
            }
            other => panic!("unexpected argument {other}"),
        }
    }
    let listener = TcpListener::bind(&listen).await.expect("bind");
    let ext = Extensions {
        pipelining,
        chunking,
        eightbitmime: true,
        enhanced_status_codes: true,
        size: Some(0),
        ..Extensions::default()
    };
    let greeting = ext.to_reply("wan-sink").to_bytes();
    let stats = Arc::new(Stats {
        connections: AtomicUsize::new(0),
        messages: AtomicUsize::new(0),
        recipients: AtomicUsize::new(0),
        first: std::sync::Mutex::new(None),
        done: Notify::new(),
        expect,
    });
    let accept_stats = Arc::clone(&stats);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stats = Arc::clone(&accept_stats);
            let ehlo = greeting.clone();
            tokio::spawn(async move {
                stats.connections.fetch_add(1, Ordering::SeqCst);
                stats
                    .first
                    .lock()
                    .expect("lock")
                    .get_or_insert_with(Instant::now);
                let _ = session(stream, &ehlo, &stats).await;
            });
        }
    });
    stats.done.notified().await;
    let first = stats
        .first
        .lock()
        .expect("lock")
        .unwrap_or_else(Instant::now);
    println!(
        "recipients={} transactions={} connections={} seconds={:.3}",
        stats.recipients.load(Ordering::SeqCst),
        stats.messages.load(Ordering::SeqCst),
        stats.connections.load(Ordering::SeqCst),
        first.elapsed().as_secs_f64()
    );
    // Keep answering until killed: a client must get its last replies and
    // say QUIT, or it would count the message as undelivered.
    std::future::pending::<()>().await;
}

enum Mode {
    Commands,
    Data(DataDecoder),
    Bdat(u64, bool),
}

async fn session(mut s: TcpStream, ehlo: &[u8], stats: &Stats) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.write_all(b"220 wan-sink ESMTP\r\n").await?;
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 1 << 16];
    let mut mode = Mode::Commands;
    let mut rcpts = 0usize;
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut quit = false;
        loop {
            match &mut mode {
                Mode::Commands => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    let line: Vec<u8> = buf.drain(..=lf).collect();
                    match Command::parse(&line) {
                        Ok(Command::Ehlo { .. }) => {
                            stats
                                .first
                                .lock()
                                .expect("lock")
                                .get_or_insert_with(Instant::now);
                            out.extend_from_slice(ehlo);
                        }
                        Ok(Command::Mail { .. }) => {
                            rcpts = 0;
                            out.extend_from_slice(b"250 2.1.0 ok\r\n");
                        }
                        Ok(Command::Rcpt { .. }) => {
                            rcpts += 1;
                            out.extend_from_slice(b"250 2.1.5 ok\r\n");
                        }
                        Ok(Command::Data) => {
                            out.extend_from_slice(b"354 go ahead\r\n");
                            mode = Mode::Data(DataDecoder::new());
                        }
                        Ok(Command::Bdat { size, last }) => mode = Mode::Bdat(size, last),
                        Ok(Command::Quit) => {
                            out.extend_from_slice(b"221 2.0.0 bye\r\n");
                            quit = true;
                            break;
                        }
                        Ok(_) => out.extend_from_slice(b"250 2.0.0 ok\r\n"),
                        Err(_) => out.extend_from_slice(b"500 5.5.2 what\r\n"),
                    }
                }
                Mode::Data(decoder) => {
                    let mut sink = Vec::new();
                    match decoder.decode(&buf, &mut sink) {
                        Some(used) => {
                            buf.drain(..used);
                            mode = Mode::Commands;
                            delivered(stats, rcpts, &mut out);
                        }
                        None => {
                            buf.clear();
                            break;
                        }
                    }
                }
                Mode::Bdat(left, last) => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    buf.drain(..take);
                    *left -= take as u64;
                    if *left > 0 {
                        break;
                    }
                    if *last {
                        delivered(stats, rcpts, &mut out);
                    } else {
                        out.extend_from_slice(b"250 2.0.0 chunk ok\r\n");
                    }
                    mode = Mode::Commands;
                }
            }
        }
        // One write per batch of input, as a pipelining server should.
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
        if quit {
            return Ok(());
        }
    }
}

fn delivered(stats: &Stats, rcpts: usize, out: &mut Vec<u8>) {
    if rcpts == 0 {
        out.extend_from_slice(b"554 5.5.1 no valid recipients\r\n");
        return;
    }
    out.extend_from_slice(b"250 2.0.0 queued\r\n");
    stats.messages.fetch_add(1, Ordering::SeqCst);
    let before = stats.recipients.fetch_add(rcpts, Ordering::SeqCst);
    if stats.expect > 0 && before < stats.expect && before + rcpts >= stats.expect {
        stats.done.notify_one();
    }
}
