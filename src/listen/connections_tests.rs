//! The connection tracker: who is closed at the cap, and when each
//! connection's task must look again. Time is tokio's paused clock.

use std::time::Duration;

use super::*;

const PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const READ: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(60);

async fn tick(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_longest_idle_goes_first_and_the_newcomer_stays() {
    let conns = Connections::with_max(3);
    let oldest = conns.admit(PEER);
    tick(1).await;
    let served = conns.admit(PEER);
    tick(1).await;
    let newest = conns.admit(PEER);
    tick(1).await;
    // `served` finished a request just now: idle for less time than `newest`.
    drop(served.request());
    assert_eq!(conns.len(), 3);

    let fourth = conns.admit(PEER);
    assert!(oldest.evicted(), "the longest idle is told to close");
    assert!(!served.evicted() && !newest.evicted() && !fourth.evicted());
    // Told but not yet gone: the next newcomer picks another.
    let fifth = conns.admit(PEER);
    assert!(newest.evicted(), "next, the one accepted longest ago");
    assert!(!served.evicted() && !fourth.evicted() && !fifth.evicted());
    drop((oldest, newest));
    assert_eq!(conns.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_verified_request_keeps_its_connection_however_old() {
    let conns = Connections::with_max(2);
    let webhook = conns.admit(PEER);
    let request = webhook.request();
    let kept = webhook.for_request().protect();
    tick(10).await;
    let stranger = conns.admit(PEER);
    tick(1).await;
    let another = conns.admit(PEER);
    assert!(!webhook.evicted(), "protected while it is stored");
    assert!(stranger.evicted());
    drop((kept, request));
    tick(1).await;
    let third = conns.admit(PEER);
    // Idle since its answer a second ago, yet older than `another`'s
    // accept: it goes now.
    assert!(!another.evicted() && !third.evicted());
    assert!(webhook.evicted());
}

#[tokio::test(start_paused = true)]
async fn a_peer_holding_the_most_gives_way_first_however_new_its_sockets() {
    let at = |ip: &str| -> std::net::SocketAddr { format!("{ip}:40000").parse().unwrap() };
    let conns = Connections::with_max(4);
    let replicate = conns.admit(at("44.0.0.1"));
    tick(1).await;
    let flood: Vec<_> = (0..3).map(|_| conns.admit(at("203.0.113.9"))).collect();
    tick(1).await;
    // The flood reconnects: each newcomer closes one of the flood's own,
    // though Replicate's is the oldest.
    let mut again = Vec::new();
    for round in 0..3 {
        again.push(conns.admit(at("203.0.113.9")));
        assert!(!replicate.evicted(), "round {round}");
    }
    assert!(flood.iter().all(|c| c.evicted()));
    // An IPv6 flood counts as one peer per /64.
    let conns = Connections::with_max(3);
    let replicate = conns.admit(at("[2600:1f18::1]"));
    let _a = conns.admit(at("[2001:db8:0:1::a]"));
    let _b = conns.admit(at("[2001:db8:0:1::b]"));
    let _c = conns.admit(at("[2001:db8:0:1::c]"));
    assert!(!replicate.evicted());
    assert!(_a.evicted());
}

#[tokio::test(start_paused = true)]
async fn when_nothing_can_go_the_newcomer_is_still_let_in() {
    let conns = Connections::with_max(1);
    let busy = conns.admit(PEER);
    let _kept = busy.for_request().protect();
    let newcomer = conns.admit(PEER);
    assert!(!busy.evicted() && !newcomer.evicted());
    assert_eq!(conns.len(), 2);
    // Out of descriptors: the only one that may go does, once.
    assert!(conns.evict_one());
    assert!(newcomer.evicted() && !busy.evicted());
    assert!(!conns.evict_one());
}

#[tokio::test(start_paused = true)]
async fn deadlines_follow_the_connection_through_its_requests() {
    let conns = Connections::with_max(8);
    let c = conns.admit(PEER);
    let accepted = Instant::now();
    // No request yet: its head must be complete within the read timeout.
    assert_eq!(
        c.deadline(READ, IDLE),
        Some((accepted + READ, Closed::Slow))
    );
    tick(5).await;
    let request = c.request();
    assert_eq!(c.deadline(READ, IDLE), None, "the intake bounds a request");
    tick(3).await;
    drop(request);
    // Between requests: the idle timeout, from the end of the last one.
    assert_eq!(
        c.deadline(READ, IDLE),
        Some((Instant::now() + IDLE, Closed::Idle))
    );
    // Two requests at once (HTTP/2): idle only when both are done.
    let (a, b) = (c.request(), c.request());
    drop(a);
    assert_eq!(c.deadline(READ, IDLE), None);
    tick(1).await;
    drop(b);
    assert_eq!(
        c.deadline(READ, IDLE),
        Some((Instant::now() + IDLE, Closed::Idle))
    );
}

#[tokio::test(start_paused = true)]
async fn the_end_of_a_request_and_an_eviction_wake_the_task() {
    let conns = Connections::with_max(1);
    let c = conns.admit(PEER);
    drop(c.request());
    tokio::time::timeout(Duration::from_millis(1), c.changed())
        .await
        .expect("woken by the end of the request");
    let _next = conns.admit(PEER);
    tokio::time::timeout(Duration::from_millis(1), c.changed())
        .await
        .expect("woken by the eviction");
    assert!(c.evicted());
}

#[test]
fn the_descriptor_limit_leaves_room_for_the_rest_of_the_daemon() {
    let room = descriptor_room().expect("Linux tells the limit");
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!((room as u64) < soft, "{room} of {soft}");
    assert!(room as u64 >= soft / 2, "{room} of {soft}");
}
