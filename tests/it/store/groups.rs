//! The conformance suite, continued: a digest's group. A grouped route's
//! deliveries share their group's lane and are all due together, when no
//! member has come for the wait or the longest wait after the first has
//! passed; one is claimed at a time, the group's members are read
//! together and marked sent together; a repeat of a member adds nothing
//! and a member that comes after its digest went starts the next.

use super::*;

const HOUR: i64 = 3_600_000;

/// Job `job`'s end in `status`, a member of group `lane` of route `sweep`.
fn member(job: &str, status: Status, lane: &str, wait_ms: i64, max_wait_ms: i64) -> NewEvent {
    let mut e = event(&format!("msg_{job}"), job, status, &[("sweep", "chat")]);
    e.routing.groups = vec![store::Group {
        route: "sweep".into(),
        lane: lane.into(),
        wait_ms,
        max_wait_ms,
    }];
    e
}

#[tokio::test]
async fn a_groups_members_are_due_together_claimed_one_at_a_time_and_sent_together() {
    each_backend!(|name, store| {
        let start = now_ms();
        for (job, status) in [
            ("p1", Status::Failed),
            ("p2", Status::Succeeded),
            ("p3", Status::Succeeded),
        ] {
            store
                .insert(member(job, status, "group:sweep:lr", HOUR, 2 * HOUR))
                .await
                .unwrap();
        }
        // A repeat of p2's end adds nothing.
        let mut again = member("p2", Status::Succeeded, "group:sweep:lr", HOUR, 2 * HOUR);
        again.webhook_id = "msg_p2_again".into();
        store.insert(again).await.unwrap();
        let done = now_ms();

        assert!(
            store
                .claim("chat", done + 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: held for the wait"
        );
        let due = store.next_due(vec!["chat".into()]).await.unwrap().unwrap();
        assert!(
            (start + HOUR..=done + HOUR).contains(&due),
            "{name}: due an hour after the last member"
        );
        let claimed = store.claim("chat", due, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "{name}: one at a time");
        assert_eq!(claimed[0].event.object_id, "p1", "{name}: the oldest");
        assert_eq!(claimed[0].delivery.lane.as_deref(), Some("group:sweep:lr"));
        let members = store
            .group_members("group:sweep:lr".into(), "chat".into(), 100, 1 << 20)
            .await
            .unwrap();
        let jobs: Vec<&str> = members.iter().map(|(_, e)| e.object_id.as_str()).collect();
        assert_eq!(jobs, ["p1", "p2", "p3"], "{name}");
        // Within a byte budget, the oldest always; the rest as they fit.
        let size = |k: usize| -> usize { members[..k].iter().map(|(_, e)| e.body.len()).sum() };
        for (budget, want) in [(1, 1), (size(2), 2), (size(3) - 1, 2), (size(3), 3)] {
            let within = store
                .group_members("group:sweep:lr".into(), "chat".into(), 100, budget)
                .await
                .unwrap();
            assert_eq!(within.len(), want, "{name}: {budget} bytes");
        }

        // p4 comes while the digest is being sent: the next group.
        store
            .insert(member(
                "p4",
                Status::Failed,
                "group:sweep:lr",
                HOUR,
                2 * HOUR,
            ))
            .await
            .unwrap();
        let ids: Vec<i64> = members.iter().map(|(d, _)| d.id).collect();
        let sent = store
            .group_delivered(ids, Some("{\"digest\":3}".into()), due)
            .await
            .unwrap();
        assert_eq!(sent, 3, "{name}");
        assert!(
            store.claim("chat", due, 10).await.unwrap().is_empty(),
            "{name}: p4 waits its own hour"
        );
        let next = store.claim("chat", now_ms() + 2 * HOUR, 10).await.unwrap();
        assert_eq!(next.len(), 1, "{name}");
        assert_eq!(next[0].event.object_id, "p4", "{name}");
        stats_agree(name, store, "after a digest").await;
    });
}

#[tokio::test]
async fn a_group_that_keeps_growing_is_due_at_its_longest_wait() {
    each_backend!(|name, store| {
        let start = now_ms();
        store
            .insert(member(
                "q1",
                Status::Failed,
                "group:sweep:busy",
                HOUR,
                1_000,
            ))
            .await
            .unwrap();
        store
            .insert(member(
                "q2",
                Status::Failed,
                "group:sweep:busy",
                HOUR,
                1_000,
            ))
            .await
            .unwrap();
        let due = store.next_due(vec!["chat".into()]).await.unwrap().unwrap();
        assert!(
            due <= now_ms() + 1_000 && due >= start + 1_000,
            "{name}: {due} vs {start}"
        );
        // Other groups, and routes without groups, are their own.
        store
            .insert(member(
                "r1",
                Status::Failed,
                "group:sweep:other",
                HOUR,
                2 * HOUR,
            ))
            .await
            .unwrap();
        let claimed = store.claim("chat", now_ms() + 2_000, 10).await.unwrap();
        let jobs: Vec<&str> = claimed.iter().map(|c| c.event.object_id.as_str()).collect();
        assert_eq!(jobs, ["q1"], "{name}");
    });
}
