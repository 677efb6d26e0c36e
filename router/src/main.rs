//! `skein-router`: not built yet. This binary exists so that the workspace has its
//! final shape; the process itself arrives with issue #3. It refuses to run
//! rather than pretend to work.

fn main() {
    eprintln!(
        "skein-router: this process is not implemented in this build of skein (tracked in issue #3)"
    );
    std::process::exit(69); // EX_UNAVAILABLE
}
