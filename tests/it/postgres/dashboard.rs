//! The dashboard on a PostgreSQL store: two instances on one database each
//! serve it, a login on one holds on the other (the session key comes from
//! the token), and a dead delivery found and retried on one is delivered.

use super::*;
use crate::common::dashboard::{self, Client, TOKEN};
use replicate_relay::store::DeliveryState;

#[tokio::test]
async fn two_instances_serve_one_dashboard_and_a_retry_on_either_is_delivered() {
    let Some(server) =
        server("two_instances_serve_one_dashboard_and_a_retry_on_either_is_delivered")
    else {
        return;
    };
    let database = Database::create(&server).await;
    let slack = SlackStandIn::start().await;
    slack.plan(&[SlackAnswer::Error("channel_not_found")]);
    let mut daemons = Vec::new();
    let mut dirs = Vec::new();
    for instance in ["a", "b"] {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "{}[notifiers.ops]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml-alerts\"\napi_url = \"{}\"\n\n[[routes]]\nname = \"everything\"\nnotify = [\"ops\"]\n",
            dashboard::config(dir.path()),
            slack.api_url()
        );
        let file = write_config(dir.path(), SECRET, &extra);
        on_database(&file, &database, instance);
        daemons.push(Daemon::start(&file, Arc::new(SystemClock)).await);
        dirs.push(dir);
    }
    post_signed(&daemons[0], "msg_pg_dash", &payload("p_pg_dash", "failed")).await;
    let store = daemons[0].running.store().clone();
    let mut dead = None;
    for _ in 0..100 {
        let found = store.find("p_pg_dash", 1).await.unwrap();
        if let Some(d) = found.first().and_then(|f| f.deliveries.first())
            && d.state == DeliveryState::Dead
        {
            dead = Some(d.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = dead.expect("a dead delivery");

    // Logged in on a; the same cookie is a session on b.
    let mut on_a = Client::new(daemons[0].running.dashboard_addr().unwrap());
    assert_eq!(on_a.login(TOKEN).await.status, 303);
    let mut on_b = Client::new(daemons[1].running.dashboard_addr().unwrap());
    on_b.cookie = on_a.cookie.clone();
    let list = on_b.get("/events?job=p_pg_dash").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.body
            .contains(&format!("href=\"/events/{}\"", dead.event_seq)),
        "{}",
        list.body
    );
    let page = on_b.get(&format!("/events/{}", dead.event_seq)).await;
    assert!(page.body.contains("channel_not_found"), "{}", page.body);
    assert!(page.body.contains("POST Slack chat.postMessage"));
    let overview = on_b.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("events in 24 h"));

    let csrf = page.csrf();
    let retried = on_b
        .post(
            &format!("/deliveries/{}/retry", dead.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    slack.wait_for(2, Duration::from_secs(15)).await;
    let mut state = DeliveryState::Dead;
    for _ in 0..100 {
        state = store.find("p_pg_dash", 1).await.unwrap()[0].deliveries[0].state;
        if state == DeliveryState::Delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, DeliveryState::Delivered);
    let attempts = on_a.get(&format!("/events/{}", dead.event_seq)).await.body;
    assert!(
        attempts.contains("<tr><td>2</td><td><time>"),
        "the second attempt is listed: {attempts}"
    );
    for daemon in daemons {
        daemon.stop().await;
    }
}
