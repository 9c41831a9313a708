//! The daemon on a PostgreSQL store (`[store] url`), end to end: webhooks
//! stored and delivered, a retry answered as a duplicate, and two daemons on
//! one database, webhooks sent to both in turn, each job notified once.
//! Skipped without `RELAY_TEST_POSTGRES`, never under `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use crate::common::postgres::{Database, Private, on_database, server};
use crate::common::stand_ins::{SLACK_TOKEN, SlackAnswer, SlackStandIn, WebhookReceiver};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::Inserted;

/// A config for a daemon on `database`, named `instance`, sending every
/// final job to the webhook receiver at `hook`.
fn config_on(
    dir: &std::path::Path,
    database: &Database,
    instance: &str,
    hook: &str,
) -> std::path::PathBuf {
    let file = write_config(
        dir,
        SECRET,
        &format!(
            "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{hook}/x\"\n\n\
             [[routes]]\nname = \"everything\"\nnotify = [\"n\"]\n"
        ),
    );
    on_database(&file, database, instance);
    file
}

#[tokio::test]
async fn a_daemon_on_postgresql_stores_delivers_and_knows_a_retry() {
    let Some(server) = server("a_daemon_on_postgresql_stores_delivers_and_knows_a_retry") else {
        return;
    };
    let database = Database::create(&server).await;
    let hook = WebhookReceiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_on(dir.path(), &database, "a", &hook.addr.to_string());
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let body = payload("p_pg_1", "failed");
    post_signed(&daemon, "msg_pg_1", &body).await;
    // Replicate's retry of the same webhook: answered 200, stored once.
    post_signed(&daemon, "msg_pg_1", &body).await;
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    let store = daemon.running.store();
    assert_eq!(store.recent(10).await.unwrap().len(), 1);
    let again = store
        .insert(replicate_relay::store::NewEvent {
            webhook_id: "msg_pg_1".into(),
            object_id: "p_pg_1".into(),
            kind: replicate_relay::event::Kind::Prediction,
            status: replicate_relay::event::Status::Failed,
            model: None,
            query: String::new(),
            body: body.clone().into(),
            received_at_ms: replicate_relay::clock::now_ms(),
            routing: replicate_relay::store::Routing {
                lifecycle: None,
                groups: Vec::new(),
                after: Vec::new(),
                dedup_key: "p_pg_1:failed".into(),
                deliveries: vec![],
                expires_at_ms: replicate_relay::clock::now_ms() + 3_600_000,
            },
        })
        .await
        .unwrap();
    assert!(matches!(again, Inserted::Duplicate(_)), "{again:?}");
    // The command line reads the same database.
    let admin = replicate_relay::store::open_admin(&daemon.config.store).unwrap();
    assert_eq!(admin.recent(10).await.unwrap()[0].object_id, "p_pg_1");
    daemon.stop().await;
}

#[tokio::test]
async fn two_daemons_on_one_database_notify_each_job_once() {
    let Some(server) = server("two_daemons_on_one_database_notify_each_job_once") else {
        return;
    };
    let database = Database::create(&server).await;
    let hook = WebhookReceiver::start(SECRET).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(
        &config_on(dir_a.path(), &database, "a", &hook.addr.to_string()),
        Arc::new(SystemClock),
    )
    .await;
    let b = Daemon::start(
        &config_on(dir_b.path(), &database, "b", &hook.addr.to_string()),
        Arc::new(SystemClock),
    )
    .await;
    const JOBS: usize = 20;
    for i in 0..JOBS {
        let body = payload(&format!("p_two_{i}"), "succeeded");
        // Each webhook to one daemon, and Replicate's retry of it to the other.
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        post_signed(first, &format!("msg_two_{i}"), &body).await;
        post_signed(second, &format!("msg_two_{i}"), &body).await;
    }
    let got = hook.wait_for(JOBS, Duration::from_secs(20)).await;
    // A moment more, for a second send of anything to show.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let got_all = hook.wait_for(JOBS + 1, Duration::from_millis(100)).await;
    assert_eq!(got.len(), JOBS);
    assert_eq!(got_all.len(), JOBS, "each job notified once");
    assert_eq!(a.running.store().recent(100).await.unwrap().len(), JOBS);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_429_seen_by_one_daemon_pauses_the_other() {
    let Some(server) = server("a_429_seen_by_one_daemon_pauses_the_other") else {
        return;
    };
    let database = Database::create(&server).await;
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::RateLimited { retry_after: 5 }]);
    let daemons = {
        let mut daemons = Vec::new();
        for instance in ["a", "b"] {
            let dir = tempfile::tempdir().unwrap();
            let file = config_on(dir.path(), &database, instance, "127.0.0.1:9");
            let text = std::fs::read_to_string(&file).unwrap().replace(
                "type = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"",
                &format!(
                    "type = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\napi_url = \"{}\"",
                    slack.api_url()
                ),
            );
            std::fs::write(&file, text).unwrap();
            daemons.push((Daemon::start(&file, Arc::new(SystemClock)).await, dir));
        }
        daemons
    };
    let (a, b) = (&daemons[0].0, &daemons[1].0);
    post_signed(a, "msg_429_a", &payload("p_429_a", "failed")).await;
    let first = slack.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    assert!(
        first[0].answer.contains("429") || first[0].answer.contains("ratelimited"),
        "{}",
        first[0].answer
    );
    // Past the half second in which daemons take in each other's pauses.
    tokio::time::sleep(Duration::from_secs(1)).await;
    post_signed(b, "msg_429_b", &payload("p_429_b", "failed")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        slack.requests().len(),
        1,
        "b sent to the workspace a asked to wait"
    );
    // Once the pause is over, both go out.
    let all = slack.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(
        all.len(),
        3,
        "{:?}",
        all.iter().map(|r| &r.answer).collect::<Vec<_>>()
    );
    assert!(all[1].at.duration_since(first[0].at) >= Duration::from_secs(5));
    for (daemon, _dir) in daemons {
        daemon.stop().await;
    }
}

/// Two daemons on a PostgreSQL server of the test's own, webhooks sent to
/// both in turn, the server stopped under that load and started again:
/// every answer meanwhile is 503 or a refused connection, `/healthz` says
/// 503, both come back with no restart, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_down_answers_503_loses_nothing_and_recovers_by_itself() {
    use crate::common::senders::{Senders, all_delivered};
    let test = "postgresql_down_answers_503_loses_nothing_and_recovers_by_itself";
    if server(test).is_none() {
        return;
    }
    let Some(pg) = Private::start(test) else {
        return;
    };
    let hook = WebhookReceiver::start(SECRET).await;
    let database = Database::create(&pg.url()).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hook_at = hook.addr.to_string();
    let a = config_on(dir_a.path(), &database, "a", &hook_at);
    let b = config_on(dir_b.path(), &database, "b", &hook_at);
    let daemons = [
        Daemon::start(&a, Arc::new(SystemClock)).await,
        Daemon::start(&b, Arc::new(SystemClock)).await,
    ];
    let ports: Vec<u16> = daemons
        .iter()
        .map(|d| d.running.local_addr().port())
        .collect();
    let health = |d: &Daemon| d.hook_url().replace("/hooks/replicate", "/healthz");

    let senders = Senders::start(4, &ports, "down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for d in &daemons {
        let answer = reqwest::get(health(d)).await.unwrap();
        assert_eq!(answer.status(), 503);
        let why = answer.text().await.unwrap();
        assert!(why.contains("store"), "healthz says why: {why}");
    }
    pg.start_again();
    // Both back with no restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for d in &daemons {
        while reqwest::get(health(d)).await.unwrap().status() != 200 {
            assert!(std::time::Instant::now() < deadline, "not back after 30 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acknowledged, unexpected) = senders.stop_with_answers().await;
    assert!(
        unexpected.is_empty(),
        "answers other than 2xx, 503 or a refused connection: {unexpected:?}"
    );
    assert!(
        acknowledged.len() >= 10,
        "only {} acknowledged",
        acknowledged.len()
    );
    let delivered = all_delivered(&hook, &acknowledged).await;
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never notified: {missing:?}"
    );
    let stored = daemons[0].running.store().recent(100_000).await.unwrap();
    let stored: std::collections::HashSet<String> =
        stored.into_iter().map(|e| e.object_id).collect();
    assert!(
        acknowledged.iter().all(|id| stored.contains(id)),
        "acknowledged but not stored"
    );
    eprintln!(
        "PostgreSQL stopped under load: {} acknowledged, all stored and notified",
        acknowledged.len()
    );
    for d in daemons {
        d.stop().await;
    }
    drop(database);
}

/// Each send in flight at a kill may go out twice: the webhook notifier's
/// default concurrency.
const IN_FLIGHT_PER_KILL: usize = 4;
const KILLS: usize = 3;

/// Two daemons (processes) on one database, webhooks sent to each in turn,
/// one SIGKILLed at random moments and started again under the same
/// instance name: every acknowledged event is notified, and duplicates come
/// only from sends in flight at the kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_daemons_killed_again_and_again_loses_nothing() {
    use crate::common::senders::{Senders, all_delivered};
    use crate::common::serve::{Serve, config_on_port, wait_ready};
    let Some(server) = server("one_of_two_daemons_killed_again_and_again_loses_nothing") else {
        return;
    };
    let database = Database::create(&server).await;
    // A slow receiver keeps sends in flight when the kills come.
    let hook = WebhookReceiver::start_with_delay(SECRET, Duration::from_millis(30)).await;
    let extra = format!(
        "[notifiers.n]\ntype = \"webhook\"\nurl = \"http://{}/x\"\n\n[[routes]]\nname = \"all\"\nnotify = [\"n\"]\n",
        hook.addr
    );
    let mut daemons = Vec::new();
    for instance in ["a", "b"] {
        let dir = tempfile::tempdir().unwrap();
        let (file, port) = config_on_port(dir.path(), &extra);
        on_database(&file, &database, instance);
        daemons.push((file, port, dir));
    }
    let ports = [daemons[0].1, daemons[1].1];
    let b = Serve::start(&daemons[1].0, &[("RUST_LOG", "warn")]);
    wait_ready(ports[1]).await;

    let mut senders = Some(Senders::start(4, &ports, "two_kill"));
    for kill in 0..=KILLS {
        let a = Serve::start(&daemons[0].0, &[("RUST_LOG", "warn")]);
        wait_ready(ports[0]).await;
        if kill == KILLS {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let want = senders.take().expect("stopped once").stop().await;
            let delivered = all_delivered(&hook, &want).await;
            let missing: Vec<&String> = want
                .iter()
                .filter(|id| !delivered.contains_key(*id))
                .collect();
            assert!(want.len() >= 20, "only {} acknowledged", want.len());
            assert!(
                missing.is_empty(),
                "acknowledged but never notified: {missing:?}"
            );
            let duplicates: usize = delivered.values().map(|n| n - 1).sum();
            assert!(
                duplicates <= KILLS * IN_FLIGHT_PER_KILL,
                "{duplicates} duplicates after {KILLS} kills"
            );
            eprintln!(
                "two daemons, {KILLS} kills of one: {} acknowledged, {} notified, {duplicates} duplicates",
                want.len(),
                delivered.len()
            );
            a.signal("TERM");
            let (code, log) = a.wait(Duration::from_secs(15)).await;
            assert_eq!(code, Some(0), "{log}");
        } else {
            let lifetime = 300 + (replicate_relay::dispatch::backoff::random_unit() * 600.0) as u64;
            tokio::time::sleep(Duration::from_millis(lifetime)).await;
            a.kill();
        }
    }
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{log}");
}

mod copy;
mod dashboard;

/// A send that outlasts the claim's lease (an archive of several
/// gigabytes) renews it, and another instance does not take the delivery
/// over; one that stopped renewing is taken over once the lease ends.
#[tokio::test]
async fn a_long_send_renews_its_claim_and_a_stopped_one_is_taken_over() {
    use replicate_relay::config::read::Sensitive;
    use replicate_relay::config::{PostgresConfig, StoreConfig};
    use replicate_relay::store::{self, NewEvent, Routing};
    let Some(server) = server("a_long_send_renews_its_claim_and_a_stopped_one_is_taken_over")
    else {
        return;
    };
    let database = Database::create(&server).await;
    let open = |instance: &str| {
        let config = StoreConfig {
            path: "unused.db".into(),
            keep: Duration::from_secs(86_400),
            postgres: Some(PostgresConfig {
                url: Sensitive::new(database.url.clone()),
                password: None,
                instance: instance.into(),
            }),
        };
        async move { store::open(&config, None).await.unwrap() }
    };
    let (a, b) = (open("a").await, open("b").await);
    let now = now() * 1000;
    a.insert(NewEvent {
        webhook_id: "msg_long".into(),
        object_id: "p_long".into(),
        kind: replicate_relay::event::Kind::Prediction,
        status: replicate_relay::event::Status::Succeeded,
        model: None,
        query: String::new(),
        body: payload("p_long", "succeeded").into(),
        received_at_ms: now,
        routing: Routing {
            lifecycle: None,
            groups: Vec::new(),
            dedup_key: "p_long:succeeded".into(),
            deliveries: vec![("r".into(), "keep".into())],
            expires_at_ms: now + 86_400_000,
            after: Vec::new(),
        },
    })
    .await
    .unwrap();
    let claimed = a.claim("keep", now, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].delivery.id;
    // Nine minutes in, still sending: a renews its ten-minute lease.
    let lease = 10 * 60 * 1000;
    a.keep_claim(id, now + 9 * 60 * 1000).await.unwrap();
    assert!(
        b.claim("keep", now + lease + 1, 1)
            .await
            .unwrap()
            .is_empty(),
        "b took over a claim a renewed"
    );
    // Another instance cannot renew a's claim for it.
    b.keep_claim(id, now + 30 * 60 * 1000).await.unwrap();
    let taken = b
        .claim("keep", now + 9 * 60 * 1000 + lease + 1, 1)
        .await
        .unwrap();
    assert_eq!(
        taken.len(),
        1,
        "a stopped renewing; b takes the delivery over"
    );
    assert_eq!(taken[0].delivery.attempts, 2);
    a.close().await;
    b.close().await;
}
