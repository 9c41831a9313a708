//! A notifier that panics: a kind of this test's own (registered beside the
//! built-in ones) whose sender panics on every message. Other deliveries keep
//! flowing, the panicking one is retried and then dead with the panic's
//! message, and `/metrics` counts the panics.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use replicate_relay::clock::SystemClock;
use replicate_relay::config::read::{Reader, Table};
use replicate_relay::notify::kind::{NotifierKind, Settings, Shared};
use replicate_relay::notify::registry;
use replicate_relay::notify::{Attempt, DeliveryError, Notify, SetupError};
use replicate_relay::render::{BuiltIn, Format, Message, Rendered, Templates};
use replicate_relay::store::{BoxFuture, DeliveryState};
use serde_json::Value;

struct PanicKind;

#[derive(Debug)]
struct PanicSettings;

struct Panics;

impl NotifierKind for PanicKind {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn formats(&self) -> &'static [Format] {
        &[]
    }
    fn default_template(&self) -> Option<&'static str> {
        None
    }
    fn built_in(&self) -> &'static [BuiltIn] {
        &[]
    }
    fn read(&self, _: &mut Reader, _: Table<'_>) -> Option<Arc<dyn Settings>> {
        Some(Arc::new(PanicSettings))
    }
}

impl Settings for PanicSettings {
    fn kind(&self) -> &'static dyn NotifierKind {
        &PanicKind
    }
    fn build(&self, _: &str, _: &mut Shared) -> Result<Arc<dyn Notify>, SetupError> {
        Ok(Arc::new(Panics))
    }
    fn render(
        &self,
        _: &Templates,
        _: Option<&str>,
        _: &Value,
        original: &[u8],
    ) -> Box<dyn Message> {
        Box::new(Rendered {
            message: original.to_vec(),
            fallback: None,
        })
    }
    fn describe(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Notify for Panics {
    fn send<'a>(
        &'a self,
        _: &'a dyn Message,
        _: Attempt<'a>,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { panic!("index 7 out of bounds in a test notifier") })
    }
    fn rate_key(&self) -> String {
        "panics".into()
    }
}

#[tokio::test]
async fn a_panicking_notifier_fails_its_own_deliveries_and_nothing_else() {
    registry::register(&PanicKind);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        SECRET,
        "[notifiers.bad]\ntype = \"panics\"\n\n[notifiers.good]\ntype = \"log\"\n\n\
         [[routes]]\nname = \"everything\"\nnotify = [\"bad\", \"good\"]\n",
    );
    let daemon = Daemon::start(&config, Arc::new(SystemClock)).await;
    for i in 0..3 {
        post_signed(
            &daemon,
            &format!("msg_panic_{i}"),
            &payload(&format!("p_panic_{i}"), "failed"),
        )
        .await;
    }
    let db = dir.path().join("relay.db");
    let rows = wait_deliveries(&db, Duration::from_secs(30), |r| {
        r.len() == 6
            && r.iter().all(|l| {
                matches!(
                    l.delivery.state,
                    DeliveryState::Delivered | DeliveryState::Dead
                )
            })
    })
    .await;
    for l in &rows {
        let d = &l.delivery;
        match d.notifier.as_str() {
            "good" => assert_eq!(d.state, DeliveryState::Delivered, "{d:?}"),
            _ => {
                assert_eq!(d.state, DeliveryState::Dead, "{d:?}");
                assert_eq!(d.attempts, 3, "retried, then dead");
                let error = d.last_error.as_deref().unwrap_or("");
                assert!(
                    error.contains("the `bad` notifier panicked: index 7 out of bounds"),
                    "{error}"
                );
            }
        }
    }
    assert_eq!(rows.len(), 6, "{rows:?}");
    let metrics = reqwest::get(format!("{}/metrics", daemon.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("relay_delivery_panics_total{notifier=\"bad\"}"))
        .unwrap_or_else(|| panic!("no panic counter in {metrics}"));
    assert!(
        line.ends_with(" 9"),
        "three deliveries, three attempts each: {line}"
    );
    // The daemon is still healthy: a notifier's panic is not a task's.
    assert_eq!(wait_healthy(&daemon, Duration::from_secs(1)).await, 200);
    daemon.stop().await;
}
