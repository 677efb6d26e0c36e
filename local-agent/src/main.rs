//! `skein-local [-c FILE]`: the Maildir transport agent. Started by
//! `skein-scheduler`, never by hand; see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    match skein_agent::cli::load_config(
        skein_local::PROGRAM,
        "The skein Maildir transport agent. It is started by skein-scheduler with its \
         socket on file descriptor 3; see docs/writing-an-agent.md.",
    ) {
        Ok(config) => skein_local::run(&config),
        Err(code) => code,
    }
}
