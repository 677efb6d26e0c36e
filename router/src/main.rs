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
    // The aliases file, checked as `skein config check` checks it: a
    // missing or broken one is EX_CONFIG, which is not restarted.
    // The DKIM keys are read here too, before the privilege drop, so that
    // a key may be root's alone (as the smtpd's TLS key).
    let signer = match skein_preflight::check(&loaded, skein_preflight::Reader::Router) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{}: warning: {warning}", skein_router::PROGRAM);
            }
            checked.dkim
        }
        Err(e) => {
            eprintln!("{}: {e}", skein_router::PROGRAM);
            return ExitCode::from(skein_daemon::cli::EX_CONFIG);
        }
    };
    let options = skein_router::daemon_options(&loaded.config);
    skein_daemon::run(options, |ctx| skein_router::serve(loaded, signer, ctx))
}
