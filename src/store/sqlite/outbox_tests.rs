//! The outbox's SQL, table by table: claims, outcomes, recovery, requeuing,
//! and (below) retention.

use super::*;
use crate::store::sqlite::{SqliteOptions, SqliteStore};

/// A migrated store with three events (seq 1..=3), opened directly.
fn setup() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let conn = Connection::open(&path).unwrap();
    for (i, status) in ["succeeded", "succeeded", "processing"].iter().enumerate() {
        conn.execute(
            "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
             VALUES (?1, 'p1', 'prediction', ?2, NULL, '', X'7B7D', 1000)",
            params![format!("msg_{i}"), status],
        )
        .unwrap();
    }
    (dir, conn)
}

/// A kind or delivery state the store does not know is an error naming
/// it, never read as a default; an unknown status is kept, as at intake.
#[test]
fn stored_rows_read_typed_or_say_what_is_wrong() {
    let (_dir, mut conn) = setup();
    let events = unrouted(&conn, 10).unwrap();
    assert_eq!(events[0].kind, Kind::Prediction);
    assert_eq!(events[2].status, Status::Processing);
    conn.execute("UPDATE events SET status = 'queued' WHERE seq = 1", [])
        .unwrap();
    assert_eq!(
        unrouted(&conn, 10).unwrap()[0].status,
        Status::Other("queued".into())
    );
    conn.execute("UPDATE events SET kind = 'gizmo' WHERE seq = 2", [])
        .unwrap();
    let error = unrouted(&conn, 10).unwrap_err().to_string();
    assert!(
        error.contains("unknown kind `gizmo` in the store"),
        "{error}"
    );

    record_routing(&mut conn, &[plan(1, "p1:queued", &[("r", "n")])], 1_000).unwrap();
    conn.execute("UPDATE deliveries SET state = 'lost'", [])
        .unwrap();
    let error = list(&conn, DeliveryFilter::All, 10)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown delivery state `lost` in the store"),
        "{error}"
    );
}

fn plan(seq: i64, key: &str, pairs: &[(&str, &str)]) -> RoutingPlan {
    RoutingPlan {
        event_seq: seq,
        routing: Routing {
            lifecycle: None,
            groups: Vec::new(),
            after: Vec::new(),
            dedup_key: key.into(),
            deliveries: pairs
                .iter()
                .map(|(r, n)| (r.to_string(), n.to_string()))
                .collect(),
            expires_at_ms: 100_000,
        },
    }
}

#[test]
fn routing_is_recorded_once_per_final_state_and_marks_events() {
    let (_d, mut conn) = setup();
    assert_eq!(unrouted(&conn, 10).unwrap().len(), 3);
    // Two webhooks carrying the same final state: one delivery per pair.
    let plans = vec![
        plan(1, "p1:succeeded", &[("done", "slack"), ("done", "mail")]),
        plan(2, "p1:succeeded", &[("done", "slack"), ("done", "mail")]),
        plan(3, "seq:3", &[("progress", "slack")]),
    ];
    assert_eq!(record_routing(&mut conn, &plans, 2000).unwrap(), 3);
    assert!(unrouted(&conn, 10).unwrap().is_empty());
    assert_eq!(list(&conn, DeliveryFilter::All, 10).unwrap().len(), 3);
}

#[test]
fn claim_finish_retry_and_recover() {
    let (_d, mut conn) = setup();
    record_routing(
        &mut conn,
        &[plan(1, "k1", &[("r", "slack"), ("r", "mail")])],
        2000,
    )
    .unwrap();

    assert!(
        claim(&mut conn, "slack", 1999, 10).unwrap().is_empty(),
        "not due yet"
    );
    let claimed = claim(&mut conn, "slack", 2000, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    let d = &claimed[0].delivery;
    assert_eq!(
        (d.state, d.attempts, d.notifier.as_str()),
        (DeliveryState::Sending, 1, "slack")
    );
    assert_eq!(claimed[0].event.body, b"{}");
    assert!(
        claim(&mut conn, "slack", 5000, 10).unwrap().is_empty(),
        "claimed once"
    );

    finish(
        &conn,
        d.id,
        &Outcome::Retry {
            at_ms: 4000,
            error: "HTTP 500".into(),
        },
        2500,
        None,
    )
    .unwrap();
    assert_eq!(
        next_due(&conn, &["slack".into(), "mail".into()]).unwrap(),
        Some(2000)
    );
    assert_eq!(next_due(&conn, &["slack".into()]).unwrap(), Some(4000));
    let again = claim(&mut conn, "slack", 4000, 10).unwrap();
    assert_eq!(again[0].delivery.attempts, 2);
    assert_eq!(again[0].delivery.last_error.as_deref(), Some("HTTP 500"));

    // A crash while sending: recover puts it back; `mail` is no longer
    // configured, so its delivery is held, not dead.
    let recovered = recover(&mut conn, &["slack".into()], 9000, true).unwrap();
    assert_eq!(recovered.requeued, 1);
    assert_eq!(recovered.held, [("mail".to_owned(), 1)]);
    let held = list(&conn, DeliveryFilter::Held, 10).unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        held[0]
            .delivery
            .last_error
            .as_deref()
            .unwrap()
            .contains("not in the config; held until")
    );
    assert_eq!(
        stats(&conn).unwrap(),
        OutboxStats {
            pending: 1,
            dead: 0,
            held: 1,
            oldest_pending_ms: Some(2000)
        }
    );
    assert!(
        claim(&mut conn, "mail", 200_000, 10).unwrap().is_empty(),
        "a held delivery is never claimed"
    );
    // Holding again changes nothing; the notifier back, it is due now, with
    // as long a window ahead as it had (98 s, from 2 s to 100 s).
    assert_eq!(
        recover(&mut conn, &["slack".into()], 9500, false).unwrap(),
        Recovered::default()
    );
    let back = recover(&mut conn, &["slack".into(), "mail".into()], 150_000, false).unwrap();
    assert_eq!(back.resumed, 1);
    let mail = list(&conn, DeliveryFilter::Pending, 10)
        .unwrap()
        .into_iter()
        .find(|l| l.delivery.notifier == "mail")
        .unwrap();
    assert_eq!(
        (
            mail.delivery.next_attempt_at_ms,
            mail.delivery.expires_at_ms
        ),
        (150_000, 248_000)
    );

    // Retry by hand: dead goes back to pending with a fresh window.
    let mail = claim(&mut conn, "mail", 150_000, 1).unwrap().remove(0);
    let gone = Outcome::Dead {
        error: "550".into(),
    };
    finish(&conn, mail.delivery.id, &gone, 150_500, None).unwrap();
    assert_eq!(
        retry(&conn, RetrySelector::AllDead, 10_000, 500).unwrap(),
        1
    );
    let pending = list(&conn, DeliveryFilter::Pending, 10).unwrap();
    assert_eq!(pending.len(), 2);
    let mail = pending
        .iter()
        .find(|l| l.delivery.notifier == "mail")
        .unwrap();
    assert_eq!(
        (
            mail.delivery.next_attempt_at_ms,
            mail.delivery.expires_at_ms
        ),
        (10_000, 10_500)
    );

    let slack = claim(&mut conn, "slack", 10_000, 1).unwrap().remove(0);
    finish(
        &conn,
        slack.delivery.id,
        &Outcome::Delivered { result: None },
        11_000,
        None,
    )
    .unwrap();
    assert_eq!(
        retry(&conn, RetrySelector::One(999), 12_000, 500).unwrap(),
        0
    );
    assert_eq!(
        retry(&conn, RetrySelector::One(slack.delivery.id), 12_000, 500).unwrap(),
        1
    );
}

/// What the triggers keep, against what a count finds.
fn counts_match(conn: &Connection, when: &str) {
    let kept: Vec<(String, i64)> = conn
        .prepare("SELECT class, n FROM outbox_counts WHERE n != 0 ORDER BY class")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let counted: Vec<(String, i64)> = conn
        .prepare(
            "SELECT iif(state IN ('pending', 'sending'), 'waiting', state) AS class, count(*)
             FROM deliveries WHERE state != 'delivered' GROUP BY class ORDER BY class",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, counted, "{when}");
    let s = stats(conn).unwrap();
    let of = |class: &str| {
        counted
            .iter()
            .find(|(k, _)| k == class)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        (s.pending, s.dead, s.held),
        (of("waiting"), of("dead"), of("held")),
        "{when}"
    );
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT min(created_at_ms) FROM deliveries WHERE state IN ('pending', 'sending')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(s.oldest_pending_ms, oldest, "{when}");
}

#[test]
fn the_counts_follow_every_change_and_are_read_without_a_scan() {
    let (_d, mut conn) = setup();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    counts_match(&conn, "empty");
    record_routing(
        &mut conn,
        &[
            plan(1, "k1", &[("r", "slack"), ("r", "mail")]),
            plan(2, "k2", &[("r", "slack"), ("r", "mail"), ("r", "hook")]),
        ],
        2000,
    )
    .unwrap();
    counts_match(&conn, "routed");
    let claimed = claim(&mut conn, "slack", 2000, 10).unwrap();
    counts_match(&conn, "claimed");
    finish(
        &conn,
        claimed[0].delivery.id,
        &Outcome::Delivered { result: None },
        2100,
        None,
    )
    .unwrap();
    let dead = Outcome::Dead { error: "no".into() };
    finish(&conn, claimed[1].delivery.id, &dead, 2100, None).unwrap();
    counts_match(&conn, "finished");
    // Finishing twice (a retried record of one result) changes nothing.
    finish(&conn, claimed[1].delivery.id, &dead, 2200, None).unwrap();
    counts_match(&conn, "finished again");
    claim(&mut conn, "mail", 2000, 10).unwrap();
    recover(&mut conn, &["slack".into()], 2300, true).unwrap();
    counts_match(&conn, "recovered, mail held");
    recover(&mut conn, &["slack".into(), "mail".into()], 2350, false).unwrap();
    counts_match(&conn, "mail back");
    retry(&conn, RetrySelector::AllDead, 2400, 60_000).unwrap();
    counts_match(&conn, "requeued");
    // Deleting an event takes its deliveries with it.
    conn.execute("DELETE FROM events WHERE seq = 2", [])
        .unwrap();
    counts_match(&conn, "an event deleted");
    // Neither query reads the deliveries table through; a claim writes no
    // count.
    for query in [COUNTS, OLDEST_WAITING] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(!plan.contains("SCAN deliveries"), "{query}: {plan}");
    }
}

mod retention {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    #[test]
    fn prune_keeps_recent_events_and_anything_still_to_send() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        // seq 1, 2: old; seq 3: recent.
        for (i, at) in [1_000, 2_000, 50_000].iter().enumerate() {
            conn.execute(
                "INSERT INTO events (webhook_id, object_id, kind, status, model, query, body, received_at_ms)
                 VALUES (?1, ?1, 'prediction', 'failed', NULL, '', X'7B7D', ?2)",
                params![format!("m{i}"), at],
            )
            .unwrap();
        }
        // Opening and closing the store indexes their webhook ids, as the writer would
        // have: retention spares events whose ids are not indexed yet.
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let plan = |seq: i64| RoutingPlan {
            event_seq: seq,
            routing: Routing {
                lifecycle: None,
                groups: Vec::new(),
                after: Vec::new(),
                dedup_key: format!("k{seq}"),
                deliveries: vec![("r".into(), "n".into())],
                expires_at_ms: i64::MAX,
            },
        };
        record_routing(&mut conn, &[plan(1), plan(2), plan(3)], 3_000).unwrap();
        // Event 1's delivery is finished long ago; event 2's is still pending.
        let first = claim(&mut conn, "n", 3_000, 1).unwrap().remove(0);
        finish(
            &conn,
            first.delivery.id,
            &Outcome::Delivered { result: None },
            4_000,
            None,
        )
        .unwrap();

        assert_eq!(prune(&mut conn, 10_000, 1_000).unwrap(), (1, 1));
        assert_eq!(prune(&mut conn, 10_000, 1_000).unwrap(), (0, 0));
        let left: Vec<i64> = conn
            .prepare("SELECT seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [2, 3], "pending work and recent events stay");
    }
}
