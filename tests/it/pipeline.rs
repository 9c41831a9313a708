//! Model pipelines end to end: a finished job creates the next stage's
//! prediction on the Replicate stand-in (which checks the token, the body
//! and the https webhook), the stand-in runs it and sends its signed
//! completion back to the relay over HTTPS, and the relay routes it by
//! `query.pipeline`; a chain routed back into itself stops at `max_depth`.
//! An interrupted create is never repeated silently: [`interrupted`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::ca::TestCa;
use crate::common::stand_ins::WebhookReceiver;
use crate::common::stand_ins::replicate::{ReplicateApi, Runner, TOKEN, post_signed_https};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::{Delivery, DeliveryState};
use serde_json::{Value, json};

/// A finished job of `model` with one output file.
fn finished(id: &str, model: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "model": model, "version": "v1", "status": "succeeded",
        "input": {"prompt": "a lighthouse"},
        "output": [format!("https://replicate.delivery/xezq/{id}/out-0.png")],
        "created_at": "2026-12-04T01:00:00.000000Z",
        "completed_at": "2026-12-04T01:00:04.000000Z",
        "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")},
    }))
    .unwrap()
}

/// A relay listening over HTTPS (a test CA) on a known port, its
/// `[replicate]` on `standin` with this relay as `webhook_url`, plus
/// `extra`; the stand-in runs what it creates and sends the completions
/// back.
struct Https {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    file: PathBuf,
    port: u16,
}

impl Https {
    fn new(standin: &ReplicateApi, extra: &str) -> Self {
        replicate_relay::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        ca.issue(
            &dir.path().join("fullchain.pem"),
            &dir.path().join("privkey.pem"),
        );
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let port = crate::common::stand_ins::free_port();
        let file = write_config(
            dir.path(),
            SECRET,
            &format!(
                "[server.tls]\ncert_file = \"fullchain.pem\"\nkey_file = \"privkey.pem\"\n\n\
                 [replicate]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\n\
                 webhook_url = \"https://localhost:{port}/hooks/replicate\"\n\n{extra}",
                standin.url
            ),
        );
        let text = std::fs::read_to_string(&file).unwrap().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&file, text).unwrap();
        standin.state.lock().unwrap().runner = Some(Runner {
            secret: SECRET.into(),
            ca_file: ca_file.clone(),
        });
        Https {
            dir,
            ca_file,
            file,
            port,
        }
    }

    async fn post(&self, webhook_id: &str, body: &[u8]) {
        let url = format!("https://localhost:{}/hooks/replicate", self.port);
        let (status, text) = post_signed_https(&self.ca_file, &url, SECRET, webhook_id, body).await;
        assert_eq!(status, 200, "{text}");
    }
}

/// The deliveries of job `id`'s events, once every one has ended (or as
/// they are after `within`).
async fn ended(
    config: &replicate_relay::config::Config,
    id: &str,
    within: Duration,
) -> Vec<Delivery> {
    let admin = replicate_relay::store::open_admin(&config.store).unwrap();
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = admin.find(id, 10).await.unwrap();
        let all: Vec<Delivery> = found.into_iter().flat_map(|f| f.deliveries).collect();
        let done = !all.is_empty()
            && all
                .iter()
                .all(|d| matches!(d.state, DeliveryState::Delivered | DeliveryState::Dead));
        if done || std::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn result(d: &Delivery) -> Value {
    serde_json::from_str(d.result.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_creates_the_next_stage_whose_end_comes_back_routed() {
    let standin = ReplicateApi::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let relay = Https::new(
        &standin,
        &format!(
            "[notifiers.upscale]\ntype = \"replicate\"\nmodel = \"acme/upscaler\"\n\
             input = '{{\"image\": {{{{{{json output.[0]}}}}}}, \"scale\": 4, \"note\": \"from {{{{id}}}}\"}}'\n\n\
             [notifiers.done]\ntype = \"webhook\"\nurl = \"http://{}/done\"\n\n\
             [[routes]]\nname = \"generated\"\nwhen = {{ model = \"acme/neon\" }}\nnotify = [\"upscale\"]\n\n\
             [[routes]]\nname = \"upscaled\"\nwhen = {{ \"query.pipeline\" = \"upscale\" }}\nnotify = [\"done\"]\n",
            hook.addr
        ),
    );
    let daemon = Daemon::start(&relay.file, Arc::new(SystemClock)).await;
    relay.post("msg_gen", &finished("p_gen", "acme/neon")).await;

    // The next stage's end came back through the relay and was routed.
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the upscaled job's end reached its route");
    let child: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(child["id"], "sp0000");
    assert_eq!(child["status"], "succeeded");

    // Exactly one prediction, with the templated input and a webhook back.
    let (created, requests, predictions) = {
        let s = standin.state.lock().unwrap();
        (s.created.clone(), s.requests.clone(), s.predictions.clone())
    };
    assert_eq!(created, ["sp0000"]);
    let create = requests
        .iter()
        .filter(|r| r.starts_with("POST "))
        .collect::<Vec<_>>();
    assert_eq!(create, ["POST /v1/models/acme/upscaler/predictions"]);
    let made = predictions.iter().find(|p| p["id"] == "sp0000").unwrap();
    assert_eq!(
        made["input"],
        json!({"image": "https://replicate.delivery/xezq/p_gen/out-0.png", "scale": 4, "note": "from p_gen"})
    );
    let webhook = url::Url::parse(made["webhook"].as_str().unwrap()).unwrap();
    assert_eq!(webhook.host_str(), Some("localhost"));
    let query: std::collections::HashMap<String, String> =
        webhook.query_pairs().into_owned().collect();
    assert_eq!(query["pipeline"], "upscale");
    assert_eq!(query["parent"], "p_gen");
    assert_eq!(query["depth"], "1");
    assert!(query["relay_step"].starts_with("msg_relay_"));
    assert_eq!(made["webhook_events_filter"], json!(["completed"]));

    // The parent's delivery records its child.
    let deliveries = ended(&daemon.config, "p_gen", Duration::from_secs(5)).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Delivered);
    assert_eq!(result(&deliveries[0])["prediction"], "sp0000");
    let shown = run_relay(&["events", "show", "p_gen"], &relay.file);
    assert!(
        shown.contains("upscale created prediction sp0000 (https://replicate.com/p/sp0000)"),
        "{shown}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_routed_back_into_itself_stops_at_max_depth() {
    let standin = ReplicateApi::start().await;
    let relay = Https::new(
        &standin,
        "[notifiers.again]\ntype = \"replicate\"\nmodel = \"acme/loop\"\nmax_depth = 2\n\
         input = '{\"image\": {{{json output.[0]}}}}'\n\n\
         [[routes]]\nname = \"loop\"\nwhen = { model = \"acme/loop\" }\nnotify = [\"again\"]\n",
    );
    let daemon = Daemon::start(&relay.file, Arc::new(SystemClock)).await;
    relay
        .post("msg_loop", &finished("p_loop", "acme/loop"))
        .await;

    // p_loop → sp0000 (depth 1) → sp0001 (depth 2) → stop.
    let last = ended(&daemon.config, "sp0001", Duration::from_secs(20)).await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].state, DeliveryState::Dead);
    let reason = last[0].last_error.as_deref().unwrap();
    assert!(
        reason.contains("pipeline depth limit") && reason.contains("max_depth is 2"),
        "{reason}"
    );
    assert_eq!(last[0].attempts, 1, "dead at once, not retried");
    assert_eq!(standin.state.lock().unwrap().created, ["sp0000", "sp0001"]);
    let first = ended(&daemon.config, "sp0000", Duration::from_secs(1)).await;
    assert_eq!(result(&first[0])["prediction"], "sp0001");
    daemon.stop().await;
    drop(relay.dir);
}

mod interrupted;
