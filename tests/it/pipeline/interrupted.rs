//! A create that was cut short — no answer within `[replicate] timeout`,
//! or the relay SIGKILLed while the POST was out — is never repeated
//! silently: the next attempt lists the predictions created since and
//! finds the one the delivery made (marked in its webhook), so there is
//! still one; where the listing cannot tell, the delivery is dead with
//! "may have been created", unless `at_least_once` says to create again.

use std::sync::Arc;
use std::time::Duration;

use super::{ended, finished, result};
use crate::common::serve::{Serve, config_on_port, wait_ready};
use crate::common::stand_ins::replicate::{ReplicateApi, TOKEN};
use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::store::DeliveryState;

/// A relay on plain HTTP (the stand-in runs nothing, so nothing calls its
/// webhook address back) creating `acme/upscaler` predictions through
/// `notifiers`, each answer waited for 2 s.
fn section(standin: &ReplicateApi) -> String {
    format!(
        "[replicate]\napi_url = \"{}\"\ntoken = \"{TOKEN}\"\ntimeout = \"2s\"\n\
         webhook_url = \"https://relay.example.com/hooks/replicate\"\n\n",
        standin.url
    )
}

fn stage(name: &str, extra: &str) -> String {
    format!(
        "[notifiers.{name}]\ntype = \"replicate\"\nmodel = \"acme/upscaler\"\n{extra}\n\
         input = '{{\"image\": {{{{{{json output.[0]}}}}}}}}'\n\n"
    )
}

async fn wait_created(standin: &ReplicateApi, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while standin.state.lock().unwrap().created.len() < n {
        assert!(std::time::Instant::now() < deadline, "no create came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_timed_out_is_found_by_listing_not_made_again() {
    let standin = ReplicateApi::start().await;
    standin.state.lock().unwrap().hang_creates = true;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "{}{}[[routes]]\nname = \"all\"\nnotify = [\"upscale\"]\n",
            section(&standin),
            stage("upscale", "")
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_slow", &finished("p_slow", "acme/neon")).await;
    let deliveries = ended(&daemon.config, "p_slow", Duration::from_secs(30)).await;
    assert_eq!(
        deliveries[0].state,
        DeliveryState::Delivered,
        "{deliveries:?}"
    );
    assert!(deliveries[0].attempts >= 2);
    let found = result(&deliveries[0]);
    assert_eq!(found["prediction"], "sp0000");
    assert_eq!(found["found_by_listing"], true);
    assert_eq!(
        standin.state.lock().unwrap().created,
        ["sp0000"],
        "one prediction, not two"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_listing_cannot_tell_it_is_dead_unless_at_least_once() {
    let standin = ReplicateApi::start().await;
    {
        let mut s = standin.state.lock().unwrap();
        s.hang_creates = true;
        s.hide_webhooks = true;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "{}{}{}[[routes]]\nname = \"all\"\nnotify = [\"strict\", \"loose\"]\n",
            section(&standin),
            stage("strict", ""),
            stage("loose", "at_least_once = true"),
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_unsure", &finished("p_unsure", "acme/neon")).await;
    // Both creates made and never answered; later ones are answered.
    wait_created(&standin, 2).await;
    standin.state.lock().unwrap().hang_creates = false;

    let deliveries = ended(&daemon.config, "p_unsure", Duration::from_secs(30)).await;
    let by = |name: &str| deliveries.iter().find(|d| d.notifier == name).unwrap();
    let strict = by("strict");
    assert_eq!(strict.state, DeliveryState::Dead, "{strict:?}");
    let reason = strict.last_error.as_deref().unwrap();
    assert!(
        reason.contains("may have been created") && reason.contains("retry by hand"),
        "{reason}"
    );
    let loose = by("loose");
    assert_eq!(loose.state, DeliveryState::Delivered, "{loose:?}");
    assert_eq!(result(loose)["found_by_listing"], false);
    assert_eq!(
        standin.state.lock().unwrap().created.len(),
        3,
        "at_least_once created again; strict did not"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_the_create_gives_no_second_prediction() {
    let standin = ReplicateApi::start().await;
    standin.state.lock().unwrap().hang_creates = true;
    let dir = tempfile::tempdir().unwrap();
    let (file, port) = config_on_port(
        dir.path(),
        &format!(
            "{}{}[[routes]]\nname = \"all\"\nnotify = [\"upscale\"]\n",
            section(&standin),
            stage("upscale", "")
        ),
    );
    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    let body = finished("p_killed", "acme/neon");
    let headers = signed(SECRET, "msg_killed", now(), &body);
    let url = format!("http://127.0.0.1:{port}/hooks/replicate");
    let (status, answer) = post(&reqwest::Client::new(), &url, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    // The create is made on Replicate's side; its answer never comes.
    wait_created(&standin, 1).await;
    relay.kill();
    standin.state.lock().unwrap().hang_creates = false;

    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    let config = replicate_relay::config::load_with_env(&file, []).unwrap();
    let deliveries = ended(&config, "p_killed", Duration::from_secs(30)).await;
    relay.stop_blocking();
    assert_eq!(
        deliveries[0].state,
        DeliveryState::Delivered,
        "{deliveries:?}"
    );
    let found = result(&deliveries[0]);
    assert_eq!(found["prediction"], "sp0000");
    assert_eq!(found["found_by_listing"], true);
    assert_eq!(standin.state.lock().unwrap().created, ["sp0000"]);
}
