use super::*;
use serde_json::json;

fn query(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect()
}

#[test]
fn depth_comes_from_the_webhook_and_is_zero_without_one() {
    assert_eq!(depth(&query(&[])), Ok(0));
    assert_eq!(depth(&query(&[("depth", "3")])), Ok(3));
    assert!(depth(&query(&[("depth", "-1")])).is_err());
    assert!(depth(&query(&[("depth", "many")])).is_err());
}

#[test]
fn a_child_webhook_routes_the_next_stage_and_carries_the_rest() {
    let base = url::Url::parse("https://relay.example.com/hooks/replicate").unwrap();
    let cases = [
        (
            query(&[]),
            "https://relay.example.com/hooks/replicate?pipeline=upscale&parent=p1&depth=1",
        ),
        // The parent's own stage parameters are replaced; others carried.
        (
            query(&[
                ("team", "vision"),
                ("pipeline", "generate"),
                ("parent", "p0"),
                ("depth", "1"),
                ("relay_step", "msg_relay_x"),
            ]),
            "https://relay.example.com/hooks/replicate?team=vision&pipeline=upscale&parent=p1&depth=1",
        ),
        (
            query(&[("note", "a&b=c")]),
            "https://relay.example.com/hooks/replicate?note=a%26b%3Dc&pipeline=upscale&parent=p1&depth=1",
        ),
    ];
    for (parent_query, want) in cases {
        assert_eq!(
            child_webhook(&base, &parent_query, "upscale", "p1", 1),
            want,
            "{parent_query:?}"
        );
    }
    assert_eq!(
        marked("https://relay.example.com/h?pipeline=up", "msg_relay_abc"),
        "https://relay.example.com/h?pipeline=up&relay_step=msg_relay_abc"
    );
}

#[test]
fn a_listed_prediction_is_ours_by_its_mark_or_by_target_and_input() {
    let model = Target::Model("acme/up".into());
    let input = json!({"image": "https://replicate.delivery/a.png"});
    let ours_hook =
        "https://relay.example.com/h?pipeline=up&parent=p1&depth=1&relay_step=msg_relay_1";
    let cases = [
        (
            json!({"id": "c1", "webhook": ours_hook}),
            Seen::Ours("c1".into()),
        ),
        (
            json!({"id": "c2", "webhook": ours_hook.replace("msg_relay_1", "msg_relay_2"), "model": "acme/up", "input": input}),
            Seen::Other,
        ),
        (
            json!({"id": "c3", "webhook": "https://elsewhere.example/h"}),
            Seen::Other,
        ),
        // No webhook listed: the same model and input.
        (
            json!({"id": "c4", "model": "acme/up", "input": input}),
            Seen::Ours("c4".into()),
        ),
        (
            json!({"id": "c5", "model": "acme/up", "input": {"image": "x"}}),
            Seen::Other,
        ),
        (
            json!({"id": "c6", "model": "acme/other", "input": input}),
            Seen::Other,
        ),
        // Nothing to tell by.
        (
            json!({"id": "c7", "model": "acme/up"}),
            Seen::Unsure("c7".into()),
        ),
        (
            json!({"id": "c8", "model": "acme/up", "input": input, "data_removed": true}),
            Seen::Unsure("c8".into()),
        ),
        (json!({"webhook": ours_hook}), Seen::Other),
    ];
    for (listed, want) in cases {
        assert_eq!(
            compare(&listed, "msg_relay_1", &model, &input),
            want,
            "{listed}"
        );
    }
    let version = Target::Version(format!("acme/up:{}", "ab".repeat(32)));
    let listed = json!({"id": "v1", "version": "ab".repeat(32), "input": input});
    assert_eq!(
        compare(&listed, "msg_relay_1", &version, &input),
        Seen::Ours("v1".into())
    );
}
