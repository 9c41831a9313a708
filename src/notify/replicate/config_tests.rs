use super::*;
use serde_json::json;

/// The problems' keys of a config whose one notifier, `next`, is `keys`,
/// under `[replicate]` holding `section`.
fn problems(section: &str, keys: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!(
            "[verify]\ninsecure = true\n[replicate]\n{section}\n\
             [notifiers.next]\ntype = \"replicate\"\n{keys}\n"
        ),
    )
    .unwrap();
    match crate::config::load_with_env(&file, []) {
        Ok(_) => vec![],
        Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
    }
}

const SECTION: &str =
    "token = \"r8_x\"\nwebhook_url = \"https://relay.example.com/hooks/replicate\"";
const INPUT: &str = "input = '{\"image\": {{{json output.[0]}}}}'";

#[test]
fn every_bad_key_is_reported() {
    let cases: &[(&str, &str, &[&str])] = &[
        (SECTION, &format!("model = \"acme/up\"\n{INPUT}"), &[]),
        (
            SECTION,
            &format!("version = \"{}\"\n{INPUT}", "a".repeat(64)),
            &[],
        ),
        (
            SECTION,
            &format!("version = \"acme/up:{}\"\n{INPUT}", "0f".repeat(32)),
            &[],
        ),
        (
            SECTION,
            &format!("deployment = \"acme/up-prod\"\n{INPUT}"),
            &[],
        ),
        // Its own token and address, no [replicate] defaults.
        (
            "",
            &format!(
                "model = \"acme/up\"\n{INPUT}\ntoken = \"r8_y\"\n\
                 webhook_url = \"https://relay.example.com/hooks/replicate\""
            ),
            &[],
        ),
        (SECTION, INPUT, &["notifiers.next.model"]),
        (
            SECTION,
            &format!("model = \"acme/up\"\ndeployment = \"acme/up\"\n{INPUT}"),
            &["notifiers.next.deployment"],
        ),
        (
            SECTION,
            &format!("model = \"acme\"\n{INPUT}"),
            &["notifiers.next.model"],
        ),
        (
            SECTION,
            &format!("version = \"abc\"\n{INPUT}"),
            &["notifiers.next.version"],
        ),
        (SECTION, "model = \"acme/up\"", &["notifiers.next.input"]),
        (
            SECTION,
            "model = \"acme/up\"\ninput = '{\"a\": {{#if}}'",
            &["notifiers.next.input"],
        ),
        (
            "",
            &format!("model = \"acme/up\"\n{INPUT}"),
            &["notifiers.next.webhook_url", "notifiers.next.token_file"],
        ),
        (
            SECTION,
            &format!("model = \"acme/up\"\n{INPUT}\nwebhook_url = \"http://relay.example.com/x\""),
            &["notifiers.next.webhook_url"],
        ),
        (
            SECTION,
            &format!(
                "model = \"acme/up\"\n{INPUT}\nwebhook_events_filter = [\"completed\", \"done\"]\n\
                 max_depth = 0\nat_least_once = \"yes\""
            ),
            &[
                "notifiers.next.webhook_events_filter",
                "notifiers.next.max_depth",
                "notifiers.next.at_least_once",
            ],
        ),
    ];
    for (section, keys, want) in cases {
        assert_eq!(
            problems(section, keys),
            *want,
            "[replicate]\n{section}\n{keys}"
        );
    }
}

#[test]
fn the_input_is_json_built_from_the_job() {
    let ctx = json!({
        "id": "p1",
        "output": ["https://replicate.delivery/a/out-0.png"],
        "input": {"prompt": "a \"lighthouse\"\nat dusk", "seed": 7},
    });
    let cases: &[(&str, Result<Value, ()>)] = &[
        (
            "{\"image\": {{{json output.[0]}}}}",
            Ok(json!({"image": "https://replicate.delivery/a/out-0.png"})),
        ),
        // In double braces, a value is escaped for a JSON string.
        (
            "{\"prompt\": \"{{input.prompt}}, upscaled\", \"seed\": {{input.seed}}}",
            Ok(json!({"prompt": "a \"lighthouse\"\nat dusk, upscaled", "seed": 7})),
        ),
        (
            "{\"all\": {{{json output}}}}",
            Ok(json!({"all": ctx["output"]})),
        ),
        ("[{{{json output.[0]}}}]", Err(())),
        ("{\"prompt\": {{input.prompt}}}", Err(())),
    ];
    for (source, want) in cases {
        let got = InputTemplate::compile(source).unwrap().render(&ctx);
        match want {
            Ok(value) => assert_eq!(got.as_ref(), Ok(value), "{source}"),
            Err(()) => assert!(got.is_err(), "{source}: {got:?}"),
        }
    }
}
