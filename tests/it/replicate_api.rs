//! The Replicate API client against a stand-in that checks the token and
//! pages as Replicate does: lists followed page by page through `next`,
//! date filters passed on, a 429 waited out as its `Retry-After` asks, a
//! refused token said plainly, a `next` on another host never requested,
//! an answer too large never held.

use std::time::{Duration, Instant};

use crate::common::stand_ins::replicate::{ReplicateApi, TOKEN};
use replicate_relay::config::read::Sensitive;
use replicate_relay::replicate::client::Walk;
use replicate_relay::replicate::{Api, ApiError};
use serde_json::{Value, json};

fn api(standin: &ReplicateApi, token: &str) -> Api {
    replicate_relay::install_crypto_provider();
    Api::new(&standin.url, Sensitive::new(token)).unwrap()
}

/// `n` predictions, newest first, one a minute back from 12:00.
fn predictions(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let minutes = 12 * 60 - i;
            json!({
                "id": format!("p{i:03}"),
                "status": "succeeded",
                "created_at": format!("2026-12-03T{:02}:{:02}:00.000000Z", minutes / 60, minutes % 60),
            })
        })
        .collect()
}

#[tokio::test]
async fn a_list_is_walked_page_by_page_through_next_with_its_filter() {
    let standin = ReplicateApi::start().await;
    standin.state.lock().unwrap().predictions = predictions(250);
    let api = api(&standin, TOKEN);
    let mut seen = Vec::new();
    let mut pages = 0;
    api.pages("v1/predictions", |results| {
        pages += 1;
        seen.extend(results.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        Walk::Next
    })
    .await
    .unwrap();
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen[0], "p000", "newest first");
    assert_eq!(seen[249], "p249");

    // created_after is inclusive and rides along in `next`; a walk can stop.
    let mut seen = Vec::new();
    api.pages(
        "v1/predictions?created_after=2026-12-03T10:00:00.000000Z",
        |results| {
            seen.extend(results.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
            Walk::Next
        },
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 121, "12:00 back to 10:00, both ends");
    let mut first_only = 0;
    api.pages("v1/predictions", |results| {
        first_only += results.len();
        Walk::Stop
    })
    .await
    .unwrap();
    assert_eq!(first_only, 100);
    let asked = standin.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.contains("created_after=") && r.contains("cursor=100")),
        "{asked:#?}"
    );
}

#[tokio::test]
async fn a_429_is_waited_out_as_asked() {
    let standin = ReplicateApi::start().await;
    standin.state.lock().unwrap().predictions = predictions(3);
    standin.state.lock().unwrap().refuse_next = Some(1);
    let api = api(&standin, TOKEN);
    let started = Instant::now();
    let page = api.get("v1/predictions").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "asked to wait 1 s"
    );
    assert_eq!(page["results"].as_array().unwrap().len(), 3);
    assert_eq!(standin.requests().len(), 2);
}

#[tokio::test]
async fn what_the_client_refuses_or_is_refused_says_why() {
    let standin = ReplicateApi::start().await;
    standin.state.lock().unwrap().predictions = predictions(150);

    let e = api(&standin, "r8_wrong")
        .get("v1/predictions")
        .await
        .unwrap_err();
    assert_eq!(e, ApiError::Unauthorized { status: 401 });
    assert!(e.to_string().contains("check it"), "{e}");
    assert!(!e.is_transient());

    let api = api(&standin, TOKEN);
    let e = api.get("v1/nothing").await.unwrap_err();
    assert!(
        e.to_string().contains("404") && e.to_string().contains("Not found."),
        "{e}"
    );

    // A `next` on another host is not requested: the token goes to the API only.
    standin.state.lock().unwrap().next_base = Some("http://127.0.0.1:9/".into());
    let e = api
        .pages("v1/predictions", |_| Walk::Next)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Foreign(_)), "{e}");

    let e = api.get("v1/huge").await.unwrap_err();
    assert!(matches!(e, ApiError::TooLarge { .. }), "{e}");
}
