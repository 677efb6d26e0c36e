//! `skein-router [-c FILE]`: see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    let loaded = match skein_daemon::cli::load_config(
        skein_router::PROGRAM,
        "Routes messages from the spool's incoming/ to the scheduler; see docs/router.md.",
    ) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let options = skein_router::daemon_options(&loaded.config);
    skein_daemon::run(options, |ctx| skein_router::serve(loaded, ctx))
}
