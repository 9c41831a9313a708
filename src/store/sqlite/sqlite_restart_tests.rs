//! The SQLite store's supervised tasks (the writer, the checkpoint thread)
//! panicking and starting again.

use super::*;

/// The count of `relay_task_panics_total` for `task` in the metrics text.
fn task_panics(task: &str) -> u64 {
    let needle = format!("relay_task_panics_total{{task=\"{task}\"}} ");
    crate::telemetry::handle()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `done` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_panics_starts_again_knowing_what_it_committed() {
    crate::telemetry::handle();
    let before = task_panics("store-writer");
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), SqliteOptions::default()).unwrap();
    assert_eq!(
        store.insert(event("msg_a")).await.unwrap(),
        Inserted::New(1)
    );

    // It panics right after committing msg_b, before answering or staging
    // its id: the request gets 503, as it must not be acknowledged.
    store
        .writer_state
        .panic_after_commit
        .store(true, Ordering::SeqCst);
    let err = store.insert(event("msg_b")).await.unwrap_err();
    assert!(matches!(err, StoreError::Write(_)), "{err}");
    assert!(err.to_string().contains("writer stopped"), "{err}");

    eventually("the writer starts again", || {
        store.writer_state.restarts.load(Ordering::Relaxed) == 1
    })
    .await;
    store.health().await.unwrap();
    assert!(task_panics("store-writer") > before, "counted in /metrics");
    // Its new dedup state comes from disk: Replicate's retry of msg_b is a
    // duplicate, not a second event.
    assert_eq!(
        store.insert(event("msg_b")).await.unwrap(),
        Inserted::Duplicate(2)
    );
    assert_eq!(
        store.insert(event("msg_a")).await.unwrap(),
        Inserted::Duplicate(1)
    );
    assert_eq!(
        store.insert(event("msg_c")).await.unwrap(),
        Inserted::New(3)
    );
    // Other writes go through the new connection too.
    assert_eq!(store.recent(10).await.unwrap().len(), 3);
    store.prune(0).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn while_the_writer_is_down_writes_and_health_say_why_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), SqliteOptions::default()).unwrap();
    *lock(&store.writer_state.restarting) = Some("boom".into());
    for error in [
        store.insert(event("msg_a")).await.unwrap_err(),
        store.health().await.unwrap_err(),
    ] {
        assert!(
            error
                .to_string()
                .contains("writer panicked (boom) and is being restarted"),
            "{error}"
        );
    }
    lock(&store.writer_state.restarting).take();
    store.insert(event("msg_a")).await.unwrap();
    store.health().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_thread_that_panics_starts_again() {
    crate::telemetry::handle();
    let before = task_panics("store-checkpoint");
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("relay.db"), SqliteOptions::default()).unwrap();
    store.wal.panic_next_pass.store(true, Ordering::SeqCst);
    let mut n = 0;
    let mut insert = async || {
        n += 1;
        store.insert(event(&format!("msg_{n}"))).await.unwrap();
    };
    insert().await;
    eventually("the pass panics", || {
        !store.wal.panic_next_pass.load(Ordering::SeqCst)
    })
    .await;
    eventually("the panic is counted", || {
        task_panics("store-checkpoint") > before
    })
    .await;
    // Passes run again after commits: one copies the whole WAL.
    store.wal.caught_up.store(0, Ordering::SeqCst);
    for _ in 0..50 {
        insert().await;
        if store.wal.caught_up.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.wal.caught_up.load(Ordering::SeqCst) > 0,
        "no checkpoint pass after the restart"
    );
    store.close().await;
}
