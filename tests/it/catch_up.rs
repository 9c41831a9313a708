//! Catching up on webhooks that never came, one round at a time, against
//! the Replicate API stand-in and a real store: jobs that finished while
//! the relay was down are stored and routed once (a query in the webhook
//! URL they were created with routes them as it would have); what a
//! webhook already brought in, what is still running and what was created
//! before the window are left alone; a second round stores nothing; a late
//! webhook plans no second delivery; `jobs = "ours"` takes in only the
//! jobs whose webhook pointed at this relay. The daemon's rounds are in
//! [`daemon`].

use std::time::Duration;

use crate::common::stand_ins::replicate::{ReplicateApi, TOKEN};
use crate::common::*;
use replicate_relay::config::read::Sensitive;
use replicate_relay::replicate::Api;
use replicate_relay::replicate::catch_up::{self, Caught};
use replicate_relay::store::{self, DeliveryFilter, Inserted, NewEvent};
use serde_json::{Value, json};

/// A job created `minutes_ago`, in `status`.
fn job(id: &str, status: &str, minutes_ago: i64, extra: Value) -> Value {
    let at = now() - minutes_ago * 60;
    let created = time::OffsetDateTime::from_unix_timestamp(at).unwrap();
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000000Z");
    let mut job = json!({
        "id": id, "status": status, "model": "acme/neon", "source": "api",
        "created_at": created.format(&format).unwrap(),
        "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")},
    });
    if let (Value::Object(j), Value::Object(e)) = (&mut job, extra) {
        j.extend(e);
    }
    job
}

#[tokio::test]
async fn jobs_that_ended_while_the_relay_was_down_are_stored_and_routed_once() {
    let standin = ReplicateApi::start().await;
    {
        let mut s = standin.state.lock().unwrap();
        s.page_size = 7;
        // Newest first, as Replicate lists them.
        s.predictions = (0..20)
            .map(|i| {
                let status = if i % 4 == 0 { "failed" } else { "succeeded" };
                job(&format!("p{i:02}"), status, i, json!({}))
            })
            .collect();
        s.predictions
            .insert(0, job("p_running", "processing", 0, json!({})));
        s.predictions.push(job(
            "p_vision",
            "failed",
            30,
            json!({"webhook": "https://relay.example.org/hooks/replicate?team=vision"}),
        ));
        s.trainings = (0..5)
            .map(|i| {
                job(
                    &format!("t{i}"),
                    "succeeded",
                    60 * (i + 1),
                    json!({"output": {"version": "v", "weights": "https://replicate.delivery/w.tar"}}),
                )
            })
            .collect();
        // Before the window (a day back): not listed again.
        s.trainings
            .push(job("t_old", "succeeded", 26 * 60, json!({})));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        "[notifiers.console]\ntype = \"log\"\n\n[notifiers.vision]\ntype = \"log\"\n\n\
         [[routes]]\nname = \"vision\"\nwhen = { \"query.team\" = \"vision\" }\nnotify = [\"vision\"]\n\n\
         [[routes]]\nname = \"everything\"\nnotify = [\"console\"]\n",
    );
    let config = replicate_relay::config::load_with_env(&file, []).unwrap();
    let store = store::open(&config.store, None).await.unwrap();
    // p03's webhook came: it is not stored again.
    let p03 = job("p03", "succeeded", 3, json!({}));
    let inserted = store
        .insert(NewEvent {
            webhook_id: "msg_p03".into(),
            object_id: "p03".into(),
            kind: replicate_relay::event::Kind::Prediction,
            status: replicate_relay::event::Status::Succeeded,
            model: Some("acme/neon".into()),
            query: String::new(),
            body: serde_json::to_vec(&p03).unwrap().into(),
            received_at_ms: now() * 1000,
            routing: replicate_relay::store::Routing {
                lifecycle: None,
                groups: Vec::new(),
                dedup_key: "p03:succeeded".into(),
                deliveries: vec![("everything".into(), "console".into())],
                expires_at_ms: now() * 1000 + 86_400_000,
                after: Vec::new(),
            },
        })
        .await
        .unwrap();
    assert!(matches!(inserted, Inserted::New(_)));

    replicate_relay::install_crypto_provider();
    let api = Api::new(&standin.url, Sensitive::new(TOKEN)).unwrap();
    let day = Duration::from_secs(86_400);
    let first = catch_up::once(&api, store.as_ref(), &config, day, now() * 1000)
        .await
        .unwrap();
    assert_eq!(
        first,
        Caught {
            finished: 26,
            stored: 25,
            others: 0
        },
        "20 + 1 predictions and 5 trainings finished; p03's webhook came"
    );
    let deliveries = store.deliveries(DeliveryFilter::All, 1000).await.unwrap();
    assert_eq!(deliveries.len(), 26, "one per job end");
    let vision: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.delivery.notifier == "vision")
        .map(|d| d.object_id.as_str())
        .collect();
    assert_eq!(vision, ["p_vision"], "routed by its webhook's query");
    let trainings = deliveries
        .iter()
        .filter(|d| d.kind == replicate_relay::event::Kind::Training)
        .count();
    assert_eq!(trainings, 5);
    assert!(
        !deliveries
            .iter()
            .any(|d| d.object_id == "p_running" || d.object_id == "t_old")
    );

    // A second round finds the same jobs and stores nothing.
    let second_at = now() * 1000 + 60_000;
    let second = catch_up::once(&api, store.as_ref(), &config, day, second_at)
        .await
        .unwrap();
    assert_eq!(second.stored, 0);
    assert_eq!(
        store
            .deliveries(DeliveryFilter::All, 1000)
            .await
            .unwrap()
            .len(),
        26
    );
    // The round covered up to its start, kept for the next (and a restart).
    assert_eq!(
        store.load_state(catch_up::COVERED).await.unwrap(),
        Some(second_at.to_string())
    );
    // p05's webhook, late: stored as the event it is, but no second alert.
    let late = store
        .insert(NewEvent {
            webhook_id: "msg_p05_late".into(),
            object_id: "p05".into(),
            kind: replicate_relay::event::Kind::Prediction,
            status: replicate_relay::event::Status::Succeeded,
            model: Some("acme/neon".into()),
            query: String::new(),
            body: serde_json::to_vec(&job("p05", "succeeded", 5, json!({})))
                .unwrap()
                .into(),
            received_at_ms: now() * 1000,
            routing: replicate_relay::store::Routing {
                lifecycle: None,
                groups: Vec::new(),
                dedup_key: "p05:succeeded".into(),
                deliveries: vec![("everything".into(), "console".into())],
                expires_at_ms: now() * 1000 + 86_400_000,
                after: Vec::new(),
            },
        })
        .await
        .unwrap();
    assert!(matches!(late, Inserted::New(_)));
    assert_eq!(
        store
            .deliveries(DeliveryFilter::All, 1000)
            .await
            .unwrap()
            .len(),
        26,
        "the late webhook planned no second delivery"
    );
    store.close().await;
}

/// With `jobs = "ours"`, only the jobs whose webhook pointed at this
/// relay's `webhook_url` are taken in (whatever their query); those with
/// another webhook, or none in the listing, are counted and left out.
#[tokio::test]
async fn with_jobs_ours_only_jobs_whose_webhook_pointed_here_count() {
    let standin = ReplicateApi::start().await;
    let here = "https://relay.example.org/hooks/replicate";
    standin.state.lock().unwrap().predictions = vec![
        job("p_here", "succeeded", 1, json!({"webhook": here})),
        job(
            "p_here_team",
            "failed",
            2,
            json!({"webhook": format!("{here}?team=vision")}),
        ),
        job(
            "p_elsewhere",
            "failed",
            3,
            json!({"webhook": "https://hooks.example.net/replicate"}),
        ),
        job("p_playground", "succeeded", 4, json!({})),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[replicate]\ntoken = \"{TOKEN}\"\njobs = \"ours\"\nwebhook_url = \"{here}\"\n\n\
             [notifiers.console]\ntype = \"log\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"console\"]\n"
        ),
    );
    let config = replicate_relay::config::load_with_env(&file, []).unwrap();
    let store = store::open(&config.store, None).await.unwrap();
    replicate_relay::install_crypto_provider();
    let api = Api::new(&standin.url, Sensitive::new(TOKEN)).unwrap();
    let caught = catch_up::once(
        &api,
        store.as_ref(),
        &config,
        Duration::from_secs(86_400),
        now() * 1000,
    )
    .await
    .unwrap();
    assert_eq!(
        caught,
        Caught {
            finished: 4,
            stored: 2,
            others: 2
        }
    );
    let mut ids: Vec<String> = store
        .deliveries(DeliveryFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.object_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["p_here", "p_here_team"]);
    store.close().await;
}

mod daemon;
