//! Fuzz target: arbitrary text as an aliases file (and as an `:include:`
//! list), then every alias of the table routed. Nothing may panic or hang
//! (loops and nesting are cut), every recipient routes to something, and
//! every failure carries a permanent (5.x.x) status.

#![no_main]

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skein_config::Config;
use skein_routing::aliases::{AliasTable, parse_include};
use skein_routing::route::Router;
use skein_routing::users::Users;
use skein_spool::{Envelope, Recipient};

/// Everyone exists except "nobody", so both outcomes are reached.
struct FuzzUsers;

impl Users for FuzzUsers {
    fn exists(&self, user: &str) -> io::Result<bool> {
        Ok(user != "nobody")
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = "hostname = \"fuzz.test\"\n[router]\nlocal_domains = [\"localhost\"]\nallow_pipe_targets = true\n";
        Config::from_toml_str(text, "fuzz", Path::new("/")).expect("fuzz configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let base = Path::new("/fuzz");
    let list = parse_include(&text, base);
    let Ok(mut table) = AliasTable::from_text(&text, base) else {
        return;
    };
    // Every include file named gets the same text as its list, which makes
    // lists that include themselves and each other easy to reach.
    if let Ok(targets) = list {
        let paths: Vec<_> = table.include_paths().map(Path::to_path_buf).collect();
        for path in paths {
            table = table.with_include(path, targets.clone());
        }
    }
    let names: Vec<String> = table.names().map(str::to_owned).collect();
    let router = Router::new(config(), &table, &FuzzUsers);
    for name in names {
        let envelope = Envelope {
            sender: "fuzz@example.net".into(),
            recipients: vec![Recipient::new(format!("{name}@localhost"))],
            smtputf8: true,
            ..Default::default()
        };
        let routed = router
            .route(&envelope, 0, false)
            .expect("FuzzUsers never fails");
        assert!(!routed.is_empty(), "{name} routed to nothing");
        for r in &routed {
            if let Some(failure) = &r.failure {
                assert_eq!(failure.status.class, 5, "{failure:?}");
            }
        }
    }
});
