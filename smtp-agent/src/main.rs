//! `skein-smtp [-c FILE]`: the SMTP transport agent. Started by
//! `skein-scheduler`, never by hand; see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    match skein_agent::cli::load_config(
        skein_smtp::PROGRAM,
        "The skein SMTP transport agent. It is started by skein-scheduler with its \
         socket on file descriptor 3; see docs/smtp-agent.md.",
    ) {
        Ok(config) => skein_smtp::run(config),
        Err(code) => code,
    }
}
