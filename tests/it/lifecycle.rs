//! A job's whole life in one Slack message (`lifecycle = true`), against
//! the Slack stand-in, which keeps the messages and checks that an update
//! names the channel by its ID and a `ts` it has, and that a reply's
//! `thread_ts` is a message of that channel: starting → succeeded is one
//! post, one update of it and one reply in its thread; an end before its
//! start is one post and nothing more; an update Slack refuses gives a new
//! post; a SIGKILL between start and end still updates the start message.
//! On Discord (its stand-in answers `?wait=true` with the message's id and
//! takes a PATCH of a message the webhook posted), the start message is
//! edited into the end. By email, the end's mail replies to the start's
//! (`In-Reply-To`, `References`) under the same subject.

use std::sync::Arc;
use std::time::Duration;

use crate::common::serve::{Serve, config_on_port, wait_ready};
use crate::common::stand_ins::slack::{CHANNEL_ID, SlackRequest};
use crate::common::stand_ins::{SLACK_TOKEN, SlackStandIn};
use crate::common::*;
use replicate_relay::clock::SystemClock;

fn config(slack: &SlackStandIn) -> String {
    format!(
        "[notifiers.chat]\ntype = \"slack\"\ntoken = \"{SLACK_TOKEN}\"\nchannel = \"#ml\"\n\
         api_url = \"{}\"\n\n\
         [[routes]]\nname = \"life\"\nlifecycle = true\nnotify = [\"chat\"]\n",
        slack.api_url()
    )
}

/// A webhook of job `id` in `status`, created at a fixed time, so its
/// end says how long it ran.
fn job(id: &str, status: &str) -> Vec<u8> {
    payload(id, status)
}

fn text(r: &SlackRequest) -> &str {
    r.body["text"].as_str().unwrap_or_default()
}

fn answered_ts(r: &SlackRequest) -> String {
    let answer: serde_json::Value = serde_json::from_str(&r.answer).unwrap();
    answer["ts"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_start_is_updated_at_its_end_with_the_details_in_its_thread() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, &config(&slack));
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;

    post_signed(&daemon, "msg_s1", &job("life_ok", "starting")).await;
    let started = slack.wait_for(1, Duration::from_secs(10)).await;
    // Later non-final webhooks add nothing.
    post_signed(&daemon, "msg_p1", &job("life_ok", "processing")).await;
    post_signed(&daemon, "msg_p2", &job("life_ok", "processing")).await;
    post_signed(&daemon, "msg_e1", &job("life_ok", "succeeded")).await;
    let all = slack.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_after = slack.requests();
    assert_eq!(all_after.len(), 3, "{all_after:#?}");

    assert_eq!(started[0].method, "chat.postMessage");
    assert_eq!(started[0].body["channel"], "#ml");
    assert!(text(&started[0]).starts_with("⏳ ") && text(&started[0]).ends_with(" started"));
    let ts = answered_ts(&started[0]);

    let update = &all[1];
    assert_eq!(update.method, "chat.update");
    assert_eq!(
        update.body["channel"], CHANNEL_ID,
        "an update names the channel's ID"
    );
    assert_eq!(update.body["ts"], ts.as_str());
    assert!(
        text(update).starts_with("✅ ") && text(update).contains("succeeded"),
        "{}",
        text(update)
    );
    assert!(update.answer.contains("\"ok\":true"), "{}", update.answer);

    let reply = &all[2];
    assert_eq!(reply.method, "chat.postMessage");
    assert_eq!(reply.body["thread_ts"], ts.as_str());
    assert!(
        reply.body.get("reply_broadcast").is_none(),
        "a success stays in the thread"
    );
    assert!(
        reply.body["blocks"].as_array().is_some_and(|b| b.len() > 1),
        "the details"
    );

    // A failure's details are shown in the channel too.
    post_signed(&daemon, "msg_s2", &job("life_bad", "starting")).await;
    slack.wait_for(4, Duration::from_secs(10)).await;
    post_signed(&daemon, "msg_e2", &job("life_bad", "failed")).await;
    let all = slack.wait_for(6, Duration::from_secs(10)).await;
    assert_eq!(all[4].method, "chat.update");
    assert!(text(&all[4]).starts_with("❌ "));
    assert_eq!(all[5].body["reply_broadcast"], true);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_before_its_start_is_one_message_and_a_refused_update_a_new_one() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, &config(&slack));
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;

    // Replicate's start webhook came late.
    post_signed(&daemon, "msg_e1", &job("life_late", "succeeded")).await;
    slack.wait_for(1, Duration::from_secs(10)).await;
    post_signed(&daemon, "msg_s1", &job("life_late", "starting")).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let got = slack.requests();
    assert_eq!(got.len(), 1, "one message, the start skipped: {got:#?}");
    assert!(got[0].body.get("thread_ts").is_none());
    assert!(
        got[0].body["blocks"]
            .as_array()
            .is_some_and(|b| b.len() > 1)
    );

    // The start message was deleted in Slack before the job ended.
    post_signed(&daemon, "msg_s2", &job("life_gone", "starting")).await;
    slack.wait_for(2, Duration::from_secs(10)).await;
    slack.delete_messages();
    post_signed(&daemon, "msg_e2", &job("life_gone", "failed")).await;
    let got = slack.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got[2].method, "chat.update");
    assert!(got[2].answer.contains("message_not_found"));
    assert_eq!(got[3].method, "chat.postMessage");
    assert!(
        got[3].body.get("thread_ts").is_none(),
        "a new message, not a reply"
    );
    assert!(got[3].answer.contains("\"ok\":true"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_start_and_end_still_updates_the_start_message() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (file, port) = config_on_port(dir.path(), &config(&slack));
    let url = format!("http://127.0.0.1:{port}/hooks/replicate");
    let send = |id: &'static str, body: Vec<u8>| {
        let url = url.clone();
        async move {
            let headers = signed(SECRET, id, now(), &body);
            let (status, answer) = post(&reqwest::Client::new(), &url, &headers, body).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    send("msg_s1", job("life_kill", "starting")).await;
    let started = slack.wait_for(1, Duration::from_secs(10)).await;
    // Past the moment the thread state is kept.
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.kill();

    let relay = Serve::start(&file, &[]);
    wait_ready(port).await;
    send("msg_e1", job("life_kill", "succeeded")).await;
    let all = slack.wait_for(3, Duration::from_secs(10)).await;
    relay.stop_blocking();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[1].method, "chat.update");
    assert_eq!(all[1].body["ts"], answered_ts(&started[0]).as_str());
    assert_eq!(all[2].body["thread_ts"], answered_ts(&started[0]).as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_discord_the_start_message_is_edited_into_the_end() {
    use crate::common::stand_ins::discord;
    let (url, channel) = discord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[notifiers.channel]\ntype = \"discord\"\nwebhook_url = \"{url}/{}\"\n\n\
             [[routes]]\nname = \"life\"\nlifecycle = true\nnotify = [\"channel\"]\n",
            discord::TOKEN
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    let posts = |n: usize| {
        let channel = channel.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while channel.posts.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            channel.posts.lock().unwrap().clone()
        }
    };
    let edits = |n: usize| {
        let channel = channel.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while channel.edits.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            channel.edits.lock().unwrap().clone()
        }
    };

    post_signed(&daemon, "msg_s1", &job("life_dc", "starting")).await;
    let started = posts(1).await;
    let title = started[0].1["embeds"][0]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        title.starts_with("⏳ ") && title.ends_with(" started"),
        "{title}"
    );
    post_signed(&daemon, "msg_e1", &job("life_dc", "failed")).await;
    let edited = edits(1).await;
    assert_eq!(edited.len(), 1);
    assert_eq!(&edited[0].0, channel.ids.lock().unwrap().first().unwrap());
    let details = edited[0].1.to_string();
    assert!(details.contains("failed"), "the end, in full: {details}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        channel.posts.lock().unwrap().len(),
        1,
        "edited, not posted again"
    );

    // Deleted in Discord before the job ended: a new post.
    post_signed(&daemon, "msg_s2", &job("life_dc2", "starting")).await;
    posts(2).await;
    channel.delete_messages();
    post_signed(&daemon, "msg_e2", &job("life_dc2", "succeeded")).await;
    let all = posts(3).await;
    assert_eq!(all.len(), 3);
    assert!(all[2].1.to_string().contains("succeeded"));
    assert_eq!(channel.edits.lock().unwrap().len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_email_the_end_replies_to_the_start_mail_under_the_same_subject() {
    use crate::common::smtp::SmtpServer;
    use crate::common::stand_ins::free_port;
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(free_port(), dir.path(), false, false);
    let file = write_config(
        dir.path(),
        SECRET,
        &format!(
            "[notifiers.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{}\"\ntls = \"none\"\n\
             from = \"relay@example.org\"\nto = [\"ml@example.org\"]\n\n\
             [[routes]]\nname = \"life\"\nlifecycle = true\nnotify = [\"mail\"]\n",
            smtp.port
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_s1", &job("life_mail", "starting")).await;
    smtp.wait_for(1, Duration::from_secs(10)).await;
    post_signed(&daemon, "msg_e1", &job("life_mail", "failed")).await;
    let mails = smtp.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let (start, end) = (&mails[0], &mails[1]);
    assert!(start["text"].as_str().unwrap().contains("started"));
    assert_eq!(end["in_reply_to"], start["message_id"], "{end:#}");
    assert_eq!(end["references"][0], start["message_id"]);
    assert_ne!(end["message_id"], start["message_id"]);
    assert_eq!(end["subject"], start["subject"], "one subject, one thread");
    assert!(start["subject"].as_str().unwrap().contains("life_mail"));
    assert!(end["text"].as_str().unwrap().contains("failed"));
    daemon.stop().await;
}

#[test]
fn route_says_what_a_lifecycle_route_does_with_each_webhook() {
    let slack_config = "[notifiers.chat]\ntype = \"slack\"\ntoken = \"xoxb-1\"\nchannel = \"#ml\"\n\n\
         [[routes]]\nname = \"life\"\nlifecycle = true\nwhen = { status = \"failed\" }\nnotify = [\"chat\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), SECRET, slack_config);
    for (status, says) in [
        (
            "starting",
            "(lifecycle: the job's first webhook posts its start message",
        ),
        (
            "failed",
            "(lifecycle: the job's end updates its start message",
        ),
    ] {
        let payload = dir.path().join(format!("{status}.json"));
        std::fs::write(&payload, job("life_route", status)).unwrap();
        let out = run_relay(&["route", payload.to_str().unwrap(), "--explain"], &file);
        assert!(out.contains(&format!("✓ life → chat {says}")), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_updates_the_start_message_at_most_once_a_second_and_the_end_still_comes() {
    let slack = SlackStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        SECRET,
        &config(&slack).replace(
            "lifecycle = true\n",
            "lifecycle = true\nprogress = \"1s\"\n",
        ),
    );
    let daemon = Daemon::start(&file, Arc::new(SystemClock)).await;
    post_signed(&daemon, "msg_s", &job("life_prog", "starting")).await;
    slack.wait_for(1, Duration::from_secs(10)).await;
    // A stream of processing webhooks, ten a second for three seconds.
    let streaming = std::time::Instant::now();
    for n in 0..30 {
        post_signed(
            &daemon,
            &format!("msg_p{n}"),
            &job("life_prog", "processing"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On a loaded machine the stream takes longer: at most one update per
    // second-long interval it spans (what the spacing below checks).
    let most = streaming.elapsed().as_secs() as usize + 2;
    post_signed(&daemon, "msg_e", &job("life_prog", "succeeded")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !slack
        .requests()
        .iter()
        .any(|r| r.body.get("thread_ts").is_some())
    {
        assert!(std::time::Instant::now() < deadline, "the end did not come");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = slack.requests();
    let progress: Vec<&SlackRequest> = all
        .iter()
        .filter(|r| r.method == "chat.update" && text(r).contains(" running"))
        .collect();
    assert!(
        (1..=most).contains(&progress.len()),
        "{} progress updates in {most} s",
        progress.len()
    );
    for pair in progress.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(990),
            "two progress updates within a second"
        );
    }
    let end = all
        .iter()
        .filter(|r| r.method == "chat.update" && text(r).starts_with("✅ "))
        .count();
    assert_eq!(end, 1, "one end update");
    let posts = all
        .iter()
        .filter(|r| r.method == "chat.postMessage")
        .count();
    assert_eq!(posts, 2, "the start and the reply, nothing more");
    daemon.stop().await;
}

/// Two daemons on one PostgreSQL database: a job's start reaches one, its
/// end the other, which updates the message the first posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_another_instance_updates_the_message_one_posted() {
    use crate::common::postgres::{Database, on_database, server};
    let Some(server) = server("on_postgresql_another_instance_updates_the_message_one_posted")
    else {
        return;
    };
    let database = Database::create(&server).await;
    let slack = SlackStandIn::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = write_config(dir_a.path(), SECRET, &config(&slack));
    let b = write_config(dir_b.path(), SECRET, &config(&slack));
    on_database(&a, &database, "a");
    on_database(&b, &database, "b");
    let a = Daemon::start(&a, Arc::new(SystemClock)).await;
    let b = Daemon::start(&b, Arc::new(SystemClock)).await;
    post_signed(&a, "msg_s", &job("life_pg", "starting")).await;
    let started = slack.wait_for(1, Duration::from_secs(10)).await;
    post_signed(&b, "msg_e", &job("life_pg", "failed")).await;
    let all = slack.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[1].method, "chat.update");
    assert_eq!(all[1].body["ts"], answered_ts(&started[0]).as_str());
    assert_eq!(all[2].body["thread_ts"], answered_ts(&started[0]).as_str());
    a.stop().await;
    b.stop().await;
    drop(database);
}
