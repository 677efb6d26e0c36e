//! `skein-scheduler [-c FILE]`: see the library's documentation.

use std::process::ExitCode;

const PROGRAM: &str = "skein-scheduler";

fn main() -> ExitCode {
    let loaded = match skein_daemon::cli::load_config(
        PROGRAM,
        "The skein scheduler: threads, agents, retries, bounces; see docs/scheduler.md.",
    ) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut opts = skein_daemon::DaemonOptions::new(PROGRAM);
    opts.user = Some(loaded.config.run_as().to_owned());
    skein_daemon::run(opts, move |ctx| skein_scheduler::serve(ctx, loaded))
}
