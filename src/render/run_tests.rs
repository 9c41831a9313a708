//! Tables for what a message says about a run: names, reasons, inputs,
//! progress, timing, links and files.

use serde_json::{Value, json};

use super::*;
use crate::event::Event;

/// The template context of `body`, where what `derive` says of the run lands.
fn derived(body: Value) -> Map<String, Value> {
    let ev = Event::from_value(body, "").unwrap();
    match crate::render::context::context(&ev, "r", "n") {
        Value::Object(ctx) => ctx,
        other => panic!("{other}"),
    }
}

fn failed_training() -> Value {
    json!({
        "id": "u3d4es90ugigsko0khupcw5n2i", "model": "lumen-labs/flux-lora-trainer",
        "status": "failed", "source": "api",
        "input": {"input_images": "https://assets.example.com/training/batch-7.zip?sig=x",
                  "trigger_word": "QXZ", "steps": 800, "learning_rate": 0.0004,
                  "lora_rank": 16, "autocaption": true},
        "logs": "Extracting training data\nFound 0 usable images\n",
        "error": "no usable images found in input_images\nTraceback …",
        "created_at": "2026-11-23T07:45:51.309914Z",
        "started_at": "2026-11-23T07:46:26.583027Z",
        "completed_at": "2026-11-23T07:46:33.117480Z",
        "urls": {"get": "https://api.replicate.com/v1/trainings/u3d4es90ugigsko0khupcw5n2i"},
        "metrics": {"predict_time": 6.534453, "total_time": 41.807566}
    })
}

#[test]
fn a_failed_training_without_a_destination_or_web_url() {
    let d = derived(failed_training());
    assert_eq!(
        d["title"],
        "Training lumen-labs/flux-lora-trainer (“QXZ”) failed"
    );
    assert_eq!(d["reason"], "no usable images found in input_images");
    assert_eq!(
        d["headline"],
        "Training lumen-labs/flux-lora-trainer (“QXZ”) failed: no usable images found in input_images"
    );
    assert_eq!(
        d["web_url"], "https://replicate.com/p/u3d4es90ugigsko0khupcw5n2i",
        "a link even without urls.web"
    );
    assert_eq!(
        d["timing"],
        json!({"run": "6.5s", "queue": "35s", "total": "42s", "billed": "6.5s"})
    );
    assert_eq!(
        d["inputs"],
        json!([
            {"name": "Trigger word", "value": "QXZ"},
            {"name": "Steps", "value": "800"},
            {"name": "Learning rate", "value": "0.0004"},
            {"name": "Rank", "value": "16"},
            {"name": "Dataset", "value": "batch-7.zip"},
        ])
    );
    assert_eq!(d["prompt"], Value::Null, "trainings have no prompt row");
    assert_eq!(d["files"], json!([]));
}

#[test]
fn names_reasons_and_headlines() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"id": "t1", "status": "succeeded", "model": "lab/trainer",
                   "destination": "acme/neon", "metrics": {"predict_time": 1191.1},
                   "urls": {"get": "https://api.replicate.com/v1/trainings/t1"}}),
            "Training acme/neon succeeded",
            "Training acme/neon succeeded in 19m 51s",
        ),
        (
            json!({"id": "p1", "status": "failed", "model": "acme/sdxl",
                   "input": {"prompt": "  a cat\nin a   hat, *bold* and _it_ and more words than fit in a title"},
                   "error": "CUDA out of memory"}),
            "Prediction acme/sdxl (“a cat in a hat, *bold* and _it_ and mor…”) failed",
            "Prediction acme/sdxl (“a cat in a hat, *bold* and _it_ and mor…”) failed: CUDA out of memory",
        ),
        (
            json!({"id": "p2", "status": "failed", "model": "acme/sdxl",
                   "deployment": "acme/prod-sdxl", "input": {"prompt": "x"}}),
            "Prediction acme/prod-sdxl failed",
            "Prediction acme/prod-sdxl failed: no error message",
        ),
        (
            json!({"id": "t2", "status": "canceled", "model": "lab/trainer",
                   "urls": {"get": "https://api.replicate.com/v1/trainings/t2"},
                   "input": {"input_zip": "https://x/data/faces.zip"},
                   "logs": "loading\nstep 450/1000 loss=0.2113\nsaving\n"}),
            "Training lab/trainer (faces.zip) canceled",
            "Training lab/trainer (faces.zip) canceled: canceled at “step 450/1000 loss=0.2113”",
        ),
        (
            json!({"id": "t3", "status": "canceled", "model": "lab/trainer",
                   "urls": {"get": "https://api.replicate.com/v1/trainings/t3"},
                   "started_at": "2026-11-23T07:46:00Z", "completed_at": "2026-11-23T07:49:02Z"}),
            "Training lab/trainer canceled",
            "Training lab/trainer canceled: canceled after 3m 2s",
        ),
        (
            json!({"id": "p3", "status": "aborted", "model": "acme/m"}),
            "Prediction acme/m aborted",
            "Prediction acme/m aborted: its deadline passed before it started (not billed)",
        ),
        (
            json!({"id": "p4", "status": "succeeded"}),
            "Prediction p4 succeeded",
            "Prediction p4 succeeded",
        ),
    ];
    for (body, title, headline) in cases {
        let d = derived(body.clone());
        assert_eq!(d["title"], title, "{body}");
        assert_eq!(d["headline"], headline, "{body}");
    }
}

#[test]
fn a_predictions_prompt_and_its_scalar_inputs() {
    let d = derived(json!({
        "id": "p1", "status": "succeeded", "model": "acme/sdxl",
        "input": {"prompt": "a cat\nin a hat", "num_outputs": 2, "guidance": 7.5,
                  "image": "https://x/in/photo.jpg", "negative": "x".repeat(200),
                  "mask": {"a": 1}, "seed": 42}
    }));
    assert_eq!(d["prompt"], "a cat\nin a hat");
    assert_eq!(
        d["inputs"],
        json!([
            {"name": "guidance", "value": "7.5"},
            {"name": "image", "value": "photo.jpg"},
            {"name": "num_outputs", "value": "2"},
            {"name": "seed", "value": "42"},
        ]),
        "no prompt, no long text, no tables"
    );
}

#[test]
fn progress_lines() {
    for (logs, want) in [
        (
            "loading\nstep 1000/1000 loss=0.1842\nsaving weights\n",
            Some("step 1000/1000 loss=0.1842"),
        ),
        (
            " 45%|████▌     | 450/1000 [01:02<01:16]\n",
            Some("45%|████▌     | 450/1000 [01:02<01:16]"),
        ),
        (
            "Epoch 3: train_loss 0.31\ndone",
            Some("Epoch 3: train_loss 0.31"),
        ),
        ("loss: 0.52\n\n", Some("loss: 0.52")),
        ("Loading model\nReady\n", None),
        ("", None),
    ] {
        assert_eq!(progress_line(logs).as_deref(), want, "{logs:?}");
    }
}

#[test]
fn timing_from_metrics_or_timestamps_and_what_is_billed() {
    let d = derived(json!({
        "id": "p1", "status": "succeeded", "deployment": "acme/prod",
        "created_at": "2026-11-23T07:00:00Z", "started_at": "2026-11-23T07:00:20Z",
        "completed_at": "2026-11-23T07:01:20Z"
    }));
    assert_eq!(
        d["timing"],
        json!({"run": "1m 0s", "queue": "20s", "total": "1m 20s", "billed": null}),
        "a deployment is billed by its instances, not per run"
    );
    let d = derived(json!({"id": "p1", "status": "aborted", "model": "acme/m"}));
    assert_eq!(d["timing"]["billed"], "not billed");
}

#[test]
fn links_always_lead_somewhere() {
    for (body, want) in [
        (
            json!({"id": "p1", "status": "failed", "urls": {"web": "https://replicate.com/p/p1x"}}),
            "https://replicate.com/p/p1x",
        ),
        (
            json!({"id": "p1", "status": "failed", "urls": {"web": "javascript:alert(1)"}}),
            "https://replicate.com/p/p1",
        ),
        (
            json!({"id": "odd id/1", "status": "failed", "model": "acme/sdxl"}),
            "https://replicate.com/acme/sdxl",
        ),
        (
            json!({"id": "odd id/1", "status": "failed", "deployment": "acme/prod"}),
            "https://replicate.com/deployments/acme/prod",
        ),
        (
            json!({"id": "odd id/1", "status": "failed", "model": "a b/<c>"}),
            "https://replicate.com/",
        ),
    ] {
        assert_eq!(derived(body.clone())["web_url"], want, "{body}");
    }
}

#[test]
fn files_images_and_when_replicate_deletes_them() {
    let d = derived(json!({
        "id": "p1", "status": "succeeded", "source": "api",
        "completed_at": "2026-11-23T07:46:33.117480Z",
        "output": ["https://x/out-0.webp?sig=1", "https://x/out.PNG", "https://x/data.json"]
    }));
    assert_eq!(
        d["files"],
        json!([
            {"url": "https://x/out-0.webp?sig=1", "name": "out-0.webp", "image": true},
            {"url": "https://x/out.PNG", "name": "out.PNG", "image": true},
            {"url": "https://x/data.json", "name": "data.json", "image": false},
        ])
    );
    assert_eq!(
        d["images"],
        json!(["https://x/out-0.webp?sig=1", "https://x/out.PNG"])
    );
    assert_eq!(d["outputs_expire_at"], "2026-11-23T08:46:33.11748Z");
    // From the website: kept, so no warning.
    let d = derived(json!({"id": "p1", "status": "succeeded", "source": "web",
                           "completed_at": "2026-11-23T07:46:33Z", "output": "https://x/a.png"}));
    assert_eq!(d["outputs_expire_at"], Value::Null);
}
