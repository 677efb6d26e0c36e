//! `skein-scheduler [-c FILE]`: see the library's documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The skein scheduler: threads, agents, retries, bounces.
#[derive(Parser)]
#[command(name = "skein-scheduler", version)]
struct Args {
    /// Configuration file (default: $SKEIN_CONFIG, else the embedded default).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match skein_config::Config::load(args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skein-scheduler: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let config_path = match &loaded.source {
        skein_config::Source::File(p) => Some(p.clone()),
        skein_config::Source::Embedded => None,
    };
    let mut opts = skein_daemon::DaemonOptions::new("skein-scheduler");
    opts.user = loaded.config.user.clone();
    let config = loaded.config;
    skein_daemon::run(opts, move |ctx| {
        skein_scheduler::serve(ctx, config, config_path)
    })
}
