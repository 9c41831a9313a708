//! The rule "a 2xx means delivered" (`tests/it/common/rule.rs`) over arbitrary
//! input: the bytes as a body, and a generated body seeded by them, so both
//! byte-level breakage and the shapes a mutator seldom reaches (deep nesting,
//! lone surrogates, numbers beyond an f64) are tried.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/common/rule.rs"]
mod rule;

fn config() -> &'static rule::Compiled {
    static C: OnceLock<rule::Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("relay-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        rule::config(&dir, &templates)
    })
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    if let Err(why) = rule::check(config, data, "") {
        panic!("{why}");
    }
    if let Some(seed) = data.get(..8) {
        let seed = u64::from_le_bytes(seed.try_into().unwrap());
        let body = rule::body(&mut rule::Rng::new(seed));
        let query = if data.len() % 3 == 0 {
            "kind=training"
        } else {
            ""
        };
        if let Err(why) = rule::check(config, body.as_bytes(), query) {
            panic!("{why}\nbody: {body}");
        }
    }
});
