//! What a config reload swaps: everything derived from one config, published
//! atomically. Readers take the version current when they look and keep it for
//! the whole request or send, so in-flight work finishes with the config it
//! started with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::config::Config;
use crate::notify::{self, BuildError, Notify};
use crate::signature::Verifier;

/// A value replaced as a whole; `load` is a lock and an `Arc` clone.
#[derive(Debug)]
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// One config and what is built from it.
pub struct Setup {
    pub config: Config,
    /// `None` only with `[verify] insecure = true`.
    pub verifier: Option<Verifier>,
    pub senders: BTreeMap<String, Arc<dyn Notify>>,
    /// The top-level payload fields the routes look at, so routing parses only
    /// those.
    pub route_keys: BTreeSet<String>,
}

impl Setup {
    /// Builds notifier clients and the signature verifier for `config`.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        let senders = notify::build_all(&config.notifiers)?;
        let verifier = (!config.verify.insecure).then(|| {
            Verifier::new(
                config.verify.secrets.clone(),
                config.verify.tolerance,
                clock,
            )
        });
        let route_keys = crate::route::payload_keys(&config.routes);
        Ok(Self {
            config,
            verifier,
            senders,
            route_keys,
        })
    }
}
