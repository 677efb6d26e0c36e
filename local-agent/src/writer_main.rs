//! `skein-local-writer DIR HOSTNAME`: writes standard input into the
//! Maildir `DIR` as whoever runs it. Started by skein-local, as the
//! recipient's account, for `local.home_mailbox` deliveries; it holds no
//! privilege and may be run by anyone (it can only do what its user can).
//! See `skein_local::home`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = skein_local::home::writer_main(&args);
    ExitCode::from(u8::try_from(code).unwrap_or(75))
}
