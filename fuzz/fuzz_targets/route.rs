//! Arbitrary events against routes using every operator: matching and its
//! explanation never panic, and explain agrees with matching.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use replicate_relay::config::{self, Config};
use replicate_relay::event::Event;
use replicate_relay::route::{self, Verdict};

const CONFIG: &str = r#"
[verify]
insecure = true
[notifiers.n]
type = "log"
[[routes]]
name = "a"
when = { model = "acme/*", "metrics.predict_time" = { gt = 1, lte = 1000 }, status = ["failed", "aborted"] }
notify = ["n"]
continue = true
[[routes]]
name = "b"
when = { "input.prompt" = { regex = "^(a|b)+$", not = "ab" }, "query.team" = { exists = true } }
notify = ["n"]
[[routes]]
name = "c"
when = { "output.0" = "*.png", kind = "training", "input.steps" = 3 }
notify = ["n"]
"#;

fn config() -> &'static Config {
    static CONFIG_LOADED: OnceLock<Config> = OnceLock::new();
    CONFIG_LOADED.get_or_init(|| {
        let file = std::env::temp_dir().join(format!("relay-fuzz-{}.toml", std::process::id()));
        std::fs::write(&file, CONFIG).unwrap();
        config::load_with_env(&file, []).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let Ok(event) = Event::from_body(body, &query) else {
        return;
    };
    let routes = &config().routes;
    let matched: Vec<&str> = route::matching(routes, &event)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let explained: Vec<&str> = route::explain(routes, &event)
        .into_iter()
        .filter(|(_, v)| *v == Verdict::Matched)
        .map(|(r, _)| r.name.as_str())
        .collect();
    assert_eq!(matched, explained);
});
