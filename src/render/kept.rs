//! A message about a job whose files an archive kept (`after` on its
//! route): its links go to the kept copies, which stay, rather than to
//! Replicate's, which are deleted an hour after the job ends; and once
//! every file has a kept copy, the warning that they will be deleted goes.

use std::collections::HashMap;

use serde_json::Value;

/// Points `ctx`'s file links (`files`, `images`, `outputs`) at the kept
/// copies `manifest` lists with a public `url`, and sets `archive` to the
/// manifest. Files without one keep Replicate's link and its deadline.
pub fn link_kept(ctx: &mut Value, manifest: Value) {
    let kept: HashMap<String, String> = manifest["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|f| {
                    Some((
                        as_written(f["source"].as_str()?),
                        f["url"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let Value::Object(map) = ctx else {
        return;
    };
    map.insert("archive".into(), manifest);
    if kept.is_empty() {
        return;
    }
    let mut all_kept = true;
    if let Some(Value::Array(files)) = map.get_mut("files") {
        for file in files {
            match file["url"].as_str().and_then(|u| kept.get(&as_written(u))) {
                Some(copy) => file["url"] = Value::String(copy.clone()),
                None => all_kept = false,
            }
        }
    }
    for list in ["images", "outputs"] {
        if let Some(Value::Array(urls)) = map.get_mut(list) {
            for url in urls {
                if let Some(copy) = url.as_str().and_then(|u| kept.get(&as_written(u))) {
                    *url = Value::String(copy.clone());
                }
            }
        }
    }
    if all_kept && map.get("more_files").and_then(Value::as_u64).unwrap_or(0) == 0 {
        map.insert("outputs_expire_at".into(), Value::Null);
    }
}

/// `url` as a URL parser writes it, as the message's links are (a
/// manifest keeps the job's own spelling: `out 1.png`, not `out%201.png`).
fn as_written(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "files": [
                {"url": "https://replicate.delivery/a/out.png", "name": "out.png", "image": true},
                {"url": "https://replicate.delivery/a/log.txt", "name": "log.txt", "image": false},
            ],
            "images": ["https://replicate.delivery/a/out.png"],
            "outputs": ["https://replicate.delivery/a/out.png", "https://replicate.delivery/a/log.txt"],
            "more_files": 0,
            "outputs_expire_at": "2026-12-03T12:00:00Z",
        })
    }

    fn manifest(urls: &[(&str, Option<&str>)]) -> Value {
        json!({"files": urls.iter().map(|(source, url)| json!({"source": source, "url": url})).collect::<Vec<_>>()})
    }

    #[test]
    fn links_go_to_the_kept_copies_and_the_deadline_goes_once_all_are_kept() {
        // What the manifest lists, the links after, and whether they expire.
        type Case<'a> = (&'a [(&'a str, Option<&'a str>)], [&'a str; 2], bool);
        let cases: &[Case] = &[
            // Every file kept and served: every link moves, no deadline.
            (
                &[
                    (
                        "https://replicate.delivery/a/out.png",
                        Some("https://f.example/p/out.png"),
                    ),
                    (
                        "https://replicate.delivery/a/log.txt",
                        Some("https://f.example/p/log.txt"),
                    ),
                ],
                ["https://f.example/p/out.png", "https://f.example/p/log.txt"],
                false,
            ),
            // One kept: its link moves; the other still expires.
            (
                &[(
                    "https://replicate.delivery/a/out.png",
                    Some("https://f.example/p/out.png"),
                )],
                [
                    "https://f.example/p/out.png",
                    "https://replicate.delivery/a/log.txt",
                ],
                true,
            ),
            // Kept, but not served (no public_url): nothing to link to.
            (
                &[
                    ("https://replicate.delivery/a/out.png", None),
                    ("https://replicate.delivery/a/log.txt", None),
                ],
                [
                    "https://replicate.delivery/a/out.png",
                    "https://replicate.delivery/a/log.txt",
                ],
                true,
            ),
        ];
        for (kept, want, expires) in cases {
            let mut c = ctx();
            link_kept(&mut c, manifest(kept));
            assert_eq!(c["files"][0]["url"], want[0], "{kept:?}");
            assert_eq!(c["files"][1]["url"], want[1], "{kept:?}");
            assert_eq!(c["images"][0], want[0]);
            assert_eq!(c["outputs"][1], want[1]);
            assert_eq!(!c["outputs_expire_at"].is_null(), *expires, "{kept:?}");
            assert!(c["archive"]["files"].is_array());
        }
    }
}
