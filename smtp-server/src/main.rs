//! `skein-smtpd [-c FILE]`: see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    let loaded = match skein_daemon::cli::load_config(
        skein_smtpd::PROGRAM,
        "The inbound SMTP server: accepts mail into the spool's incoming/; see docs/operations.md.",
    ) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let options = skein_smtpd::daemon_options(&loaded.config);
    skein_daemon::run(options, |ctx| skein_smtpd::serve(loaded.config, ctx))
}
