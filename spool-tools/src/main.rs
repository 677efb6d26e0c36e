//! `skein`: see the library's documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug: report it as EX_SOFTWARE, as sysexits asks.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("skein: internal error (a bug): {info}");
        std::process::exit(i32::from(skein_tools::sysexits::EX_SOFTWARE));
    }));
    ExitCode::from(skein_tools::cli::main(std::env::args_os().collect()))
}
