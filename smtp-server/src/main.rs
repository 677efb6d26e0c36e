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
    // What it reads at start, checked as `skein config check` checks it:
    // a missing or broken file is EX_CONFIG, which is not restarted.
    let checked = match skein_preflight::check(&loaded, skein_preflight::Reader::Smtpd) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{}: {e}", skein_smtpd::PROGRAM);
            return ExitCode::from(skein_daemon::cli::EX_CONFIG);
        }
    };
    let options = skein_smtpd::daemon_options(&loaded.config);
    skein_daemon::run(options, |ctx| skein_smtpd::serve(loaded, checked, ctx))
}
