//! Built-in sample events of every kind and status, for `check` (which renders
//! every template against each of them in strict mode) and for previews. Each
//! sample carries every field a payload may have, so strict mode flags only
//! names that can never exist — the misspellings.

use serde_json::{Value, json};

use crate::event::{Event, Kind, Status};

/// `(label, event)` for every kind and status, e.g. `("training failed", …)`.
pub fn samples() -> Vec<(String, Event)> {
    let mut out = Vec::new();
    for kind in Kind::NAMES {
        for status in Status::KNOWN {
            let payload = sample(kind, status);
            let event = Event::from_value(payload, "team=ml").expect("samples are valid events");
            out.push((format!("{kind} {status}"), event));
        }
    }
    out
}

/// The payloads in `examples/`, as `(label, event, body)`: real-looking jobs
/// (a training that found no images, a deployment's failure, an image
/// model's success), for previews people judge a template by.
pub fn examples() -> Vec<(String, Event, Vec<u8>)> {
    const EXAMPLES: &[(&str, &str)] = &[
        (
            "example training failed",
            include_str!("../../examples/training-failed.json"),
        ),
        (
            "example training succeeded",
            include_str!("../../examples/training-succeeded.json"),
        ),
        (
            "example prediction failed",
            include_str!("../../examples/prediction-failed.json"),
        ),
        (
            "example prediction succeeded",
            include_str!("../../examples/prediction-succeeded.json"),
        ),
    ];
    EXAMPLES
        .iter()
        .map(|(label, body)| {
            let query = if label.contains("training") {
                "kind=training"
            } else {
                ""
            };
            let event =
                Event::from_body(body.as_bytes(), query).expect("examples are valid events");
            (label.to_string(), event, body.as_bytes().to_vec())
        })
        .collect()
}

fn sample(kind: &str, status: &str) -> Value {
    let done = matches!(status, "succeeded" | "failed" | "canceled" | "aborted");
    let failed = matches!(status, "failed" | "aborted");
    let (id, path) = match kind {
        "training" => ("sampletrain0000000000000t", "trainings"),
        _ => ("samplepred00000000000000p", "predictions"),
    };
    let output = match (kind, status) {
        ("training", "succeeded") => json!({
            "version": "acme/sample-model:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
            "weights": "https://replicate.delivery/sample/trained_model.tar"
        }),
        ("prediction", "succeeded" | "processing") => json!([
            "https://replicate.delivery/sample/out-0.webp",
            "https://replicate.delivery/sample/out-1.webp"
        ]),
        _ => Value::Null,
    };
    json!({
        "id": id,
        "model": "acme/sample-model",
        "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        "deployment": "acme/sample-deployment",
        "destination": "acme/sample-destination",
        "input": {"prompt": "a sample prompt", "steps": 20},
        "output": output,
        "logs": "loading weights\nstep 1/20\nstep 20/20\n",
        "error": if failed { json!("CUDA out of memory") } else { Value::Null },
        "source": "api",
        "status": status,
        "data_removed": false,
        "created_at": "2026-11-20T14:03:11.482915Z",
        "started_at": if status == "starting" { Value::Null } else { json!("2026-11-20T14:03:12.007341Z") },
        "completed_at": if done { json!("2026-11-20T14:04:15.330268Z") } else { Value::Null },
        "urls": {
            "get": format!("https://api.replicate.com/v1/{path}/{id}"),
            "cancel": format!("https://api.replicate.com/v1/{path}/{id}/cancel"),
            "web": format!("https://replicate.com/p/{id}"),
            "stream": format!("https://stream.replicate.com/v1/files/{id}")
        },
        "metrics": {"predict_time": 63.3, "total_time": 63.8},
        "webhook": "https://relay.example.org/hooks/replicate?team=ml",
        "webhook_events_filter": ["start", "completed"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    #[test]
    fn every_kind_and_status() {
        let all = samples();
        assert_eq!(all.len(), 12);
        assert_eq!(examples().len(), 4);
        assert!(
            all.iter()
                .any(|(l, e)| l == "training succeeded" && e.kind == Kind::Training)
        );
        assert!(
            all.iter()
                .any(|(l, e)| l == "prediction aborted" && e.kind == Kind::Prediction)
        );
    }
}
