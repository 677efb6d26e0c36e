//! `linksim --listen ADDR --connect ADDR --delay D [--bandwidth B]
//! [--window W]`: a latency/bandwidth TCP proxy for benchmarks; see the
//! library's documentation.

use std::net::SocketAddr;
use std::process::ExitCode;

use skein_linksim::{LinkParams, parse_bandwidth, parse_duration, parse_size, serve};

const USAGE: &str = "usage: linksim --listen ADDR --connect ADDR --delay ONE_WAY [--bandwidth BITS] [--window BYTES]
  --delay      one-way delay per direction, e.g. 65ms (a 130 ms round trip)
  --bandwidth  per direction, e.g. 64kbit, 10mbit (default: unlimited)
  --window     most bytes in flight per direction, e.g. 64k (default: unlimited)";

fn main() -> ExitCode {
    let (listen, upstream, params) = match parse(std::env::args().skip(1)) {
        Ok(Some(v)) => v,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("linksim: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linksim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "linksim: {} -> {upstream}, delay {:?}, bandwidth {}, window {}",
            listener.local_addr()?,
            params.delay,
            params
                .bandwidth
                .map_or("unlimited".into(), |b| format!("{b} bit/s")),
            params
                .window
                .map_or("unlimited".into(), |w| format!("{w} bytes")),
        );
        serve(listener, upstream, params).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linksim: {e}");
            ExitCode::FAILURE
        }
    }
}

type Parsed = Option<(SocketAddr, SocketAddr, LinkParams)>;

fn parse(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let (mut listen, mut connect, mut delay) = (None, None, None);
    let (mut bandwidth, mut window) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--connect" => connect = Some(value()?.parse().map_err(|e| format!("--connect: {e}"))?),
            "--delay" => delay = Some(parse_duration(&value()?)?),
            "--bandwidth" => bandwidth = Some(parse_bandwidth(&value()?)?),
            "--window" => window = Some(parse_size(&value()?)?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Some((
        listen.ok_or("--listen is required")?,
        connect.ok_or("--connect is required")?,
        LinkParams {
            delay: delay.ok_or("--delay is required")?,
            bandwidth,
            window,
        },
    )))
}
