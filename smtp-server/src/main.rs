//! `skein-smtpd [-c FILE]`: see the library's documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use skein_config::Config;

/// EX_CONFIG from sysexits.h: the configuration cannot be used.
const EX_CONFIG: u8 = 78;

/// The inbound SMTP server: accepts mail into the spool's incoming/.
#[derive(Debug, Parser)]
#[command(name = "skein-smtpd", version)]
struct Args {
    /// The configuration file (default: $SKEIN_CONFIG, else the embedded
    /// default).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match Config::load(args.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein-smtpd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let options = skein_smtpd::daemon_options(&loaded.config);
    skein_daemon::run(options, |ctx| skein_smtpd::serve(loaded.config, ctx))
}
