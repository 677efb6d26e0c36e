//! `skein-postdrop`: see `skein_tools::postdrop`. Installed setgid to
//! `spool.drop_group`; it holds that group and nothing else.

use std::process::ExitCode;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|_| {
        // No details: a setgid program says nothing it need not.
        eprintln!("skein-postdrop: internal error (a bug)");
        std::process::exit(i32::from(skein_tools::sysexits::EX_SOFTWARE));
    }));
    ExitCode::from(skein_tools::postdrop::main(
        std::env::args_os().skip(1).collect(),
    ))
}
