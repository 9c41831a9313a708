//! Dates and durations at their limits, end to end: each job is answered
//! 2xx by the real daemon and delivered by every kind's default template to
//! a stand-in that checks what its service checks; and deliveries an
//! earlier build left dead because rendering such a job panicked are
//! delivered after `retry --dead`.

use crate::common::rule;
use replicate_relay::notify::registry;
use std::sync::Arc;
use std::time::Duration;

use crate::common::files::FileServer;
use crate::common::smtp::SmtpServer;
use crate::common::stand_ins::{
    SLACK_TOKEN, SlackStandIn, WebhookReceiver, discord, free_port, ntfy, pagerduty, teams,
};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::sqlite::{SqliteOptions, SqliteStore};
use replicate_relay::store::{DeliveryState, NewEvent, Outcome, Routing, Store};

/// One notifier of every kind, by the name the config gives it; checked
/// against the registry, so a new kind fails here until it is added.
const NOTIFIERS: [(&str, &str); 10] = [
    ("chat", "slack"),
    ("mail", "email"),
    ("hook", "webhook"),
    ("console", "log"),
    ("channel", "discord"),
    ("team", "teams"),
    ("phone", "ntfy"),
    ("oncall", "pagerduty"),
    ("shelf", "archive"),
    ("next", "replicate"),
];
const KINDS: [&str; 10] = {
    let mut names = [""; 10];
    let mut i = 0;
    while i < NOTIFIERS.len() {
        names[i] = NOTIFIERS[i].0;
        i += 1;
    }
    names
};

#[test]
fn every_registered_kind_has_a_notifier_here() {
    let mut here: Vec<&str> = NOTIFIERS.iter().map(|(_, kind)| *kind).collect();
    let mut registered: Vec<&str> = registry::KINDS.iter().map(|k| k.name()).collect();
    here.sort_unstable();
    registered.sort_unstable();
    assert_eq!(here, registered);
}

/// Every kind, each on its shipped default template, all routed every
/// final job; returns the config file and the URL of an output file the
/// archive can fetch.
async fn every_kind(
    dir: &std::path::Path,
) -> (std::path::PathBuf, Vec<Box<dyn std::any::Any>>, String) {
    let slack = SlackStandIn::start().await;
    let hook = WebhookReceiver::start(SECRET).await;
    let smtp = SmtpServer::start(free_port(), dir, false, false);
    let (discord_url, channel) = discord::start().await;
    let (teams_url, flow) = teams::start().await;
    let (ntfy_url, published) = ntfy::start().await;
    let (pd_url, service) = pagerduty::start().await;
    let files = FileServer::start().await;
    files.ca_file(dir);
    let output = files.url("/bytes/100/out.png");
    let replicate = crate::common::stand_ins::replicate::ReplicateApi::start().await;
    let config = write_config(
        dir,
        SECRET,
        &format!(
            "[replicate]\napi_url = \"{}\"\ntoken = \"{}\"\n\
             webhook_url = \"https://relay.example.com/hooks/replicate\"\n\n\
             [notifiers.chat]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\napi_url = \"{}\"\n\n\
             [notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{}\"\ntls = \"none\"\nfrom = \"relay@example.org\"\nto = [\"ml@example.org\"]\n\n\
             [notifiers.hook]\ntype = \"webhook\"\nurl = \"http://{}/\"\nsecret = \"{SECRET}\"\n\n\
             [notifiers.console]\ntype = \"log\"\n\n\
             [notifiers.channel]\ntype = \"discord\"\nwebhook_url = \"{discord_url}/{}\"\n\n\
             [notifiers.team]\ntype = \"teams\"\nwebhook_url = \"{teams_url}&sig={}\"\n\n\
             [notifiers.phone]\ntype = \"ntfy\"\nurl = \"{ntfy_url}/ml-alerts\"\ntoken = \"{}\"\n\n\
             [notifiers.oncall]\ntype = \"pagerduty\"\nrouting_key = \"{}\"\nurl = \"{pd_url}\"\n\n\
             [notifiers.shelf]\ntype = \"archive\"\nto = \"archive\"\nallow_hosts = [\"localhost\"]\nca_file = \"files-ca.pem\"\n\n\
             [notifiers.next]\ntype = \"replicate\"\nmodel = \"acme/upscaler\"\n\
             input = '{{\"image\": {{{{{{json output.[0]}}}}}}}}'\n\n\
             [[routes]]\nname = \"everything\"\nnotify = {KINDS:?}\n",
            replicate.url,
            crate::common::stand_ins::replicate::TOKEN,
            slack.api_url(),
            smtp.port,
            hook.addr,
            discord::TOKEN,
            teams::SIG,
            ntfy::TOKEN,
            pagerduty::KEY,
        ),
    );
    // Kept alive for the test's length.
    let keep: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(slack),
        Box::new(hook),
        Box::new(smtp),
        Box::new(channel),
        Box::new(flow),
        Box::new(published),
        Box::new(service),
        Box::new(files),
        Box::new(replicate),
    ];
    (config, keep, output)
}

/// A failed prediction from the API with `extra` fields, naming `output`.
fn body(id: &str, extra: &str, output: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","status":"failed","model":"acme/captioner","error":"CUDA out of memory","urls":{{"get":"https://api.replicate.com/v1/predictions/{id}"}},"output":["{output}"],{extra}}}"#
    )
    .into_bytes()
}

/// Waits until every delivery in the store at `db` is delivered (or 30 s
/// passed); says which are not.
async fn all_delivered(db: &std::path::Path, expected: usize) -> Result<(), String> {
    let rows = wait_deliveries(db, Duration::from_secs(30), |r| {
        r.len() == expected
            && r.iter()
                .all(|l| l.delivery.state == DeliveryState::Delivered)
    })
    .await;
    let left: Vec<String> = rows
        .iter()
        .filter(|l| l.delivery.state != DeliveryState::Delivered)
        .map(|l| {
            format!(
                "{} {:?}: {:?}",
                l.delivery.notifier, l.delivery.state, l.delivery.last_error
            )
        })
        .collect();
    if rows.len() == expected && left.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {expected}: {}", rows.len(), left.join("\n")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_dates_and_durations_at_their_limits_reach_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _keep, output) = every_kind(dir.path()).await;
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    for (i, (_, extra)) in rule::EDGE_TIMES.iter().enumerate() {
        post_signed(
            &daemon,
            &format!("msg_edge_{i}"),
            &body(&format!("edge{i}"), extra, &output),
        )
        .await;
    }
    let expected = rule::EDGE_TIMES.len() * KINDS.len();
    if let Err(why) = all_delivered(&dir.path().join("relay.db"), expected).await {
        panic!("{why}");
    }
    let metrics = get_text(&format!("{}/metrics", daemon.base)).await;
    assert!(
        !metrics.contains("relay_delivery_panics_total{"),
        "{metrics}"
    );
    daemon.stop().await;
}

/// An earlier build answered 200 to a job ended in year 9999, then every
/// notifier panicked building its message and the deliveries were dead
/// after three tries. `retry --dead` delivers them now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_left_dead_by_a_panic_on_a_date_are_delivered_after_retry_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _keep, output) = every_kind(dir.path()).await;
    let db = dir.path().join("relay.db");
    let late = body(
        "year9999",
        r#""source":"api","completed_at":"9999-12-31T23:59:59Z""#,
        &output,
    );
    {
        let store = SqliteStore::open(&db, SqliteOptions::default()).unwrap();
        let now = now() * 1000;
        store
            .insert(NewEvent {
                webhook_id: "msg_year9999".into(),
                object_id: "year9999".into(),
                kind: replicate_relay::event::Kind::Prediction,
                status: replicate_relay::event::Status::Failed,
                model: Some("acme/captioner".into()),
                query: String::new(),
                body: late.into(),
                received_at_ms: now,
                routing: Routing {
                    lifecycle: None,
                    groups: Vec::new(),
                    after: Vec::new(),
                    dedup_key: "year9999:failed".into(),
                    deliveries: KINDS
                        .map(|n| ("everything".to_owned(), n.to_owned()))
                        .into(),
                    expires_at_ms: now + 86_400_000,
                },
            })
            .await
            .unwrap();
        for notifier in KINDS {
            for claimed in store.claim(notifier, now + 1_000, 10).await.unwrap() {
                let error =
                    format!("the `{notifier}` notifier panicked: resulting value is out of range");
                store
                    .finish(claimed.delivery.id, Outcome::Dead { error }, now + 1_000)
                    .await
                    .unwrap();
            }
        }
        store.close().await;
    }
    let out = run_relay(&["retry", "--dead"], &config);
    let requeued = format!("Requeued {} deliveries", KINDS.len());
    assert!(out.contains(&requeued), "{out}");
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    if let Err(why) = all_delivered(&db, KINDS.len()).await {
        panic!("{why}");
    }
    daemon.stop().await;
}
