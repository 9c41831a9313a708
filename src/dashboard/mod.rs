//! The dashboard: a web page the daemon serves on a listener of its own
//! (`[dashboard] listen`), rendered on the server, working without
//! script. Its pages: the overview ([`overview`]), events
//! ([`events`]), one event with every delivery and attempt ([`event`]),
//! dead and held deliveries with retry ([`outbox`]), and the templates
//! gallery ([`gallery`]); messages are shown in sandboxed frames
//! ([`frame`]). Who may see it is [`auth`]'s; every page is built by
//! [`html`]'s escaping.
//!
//! Everything it reads and requeues goes through the store's [`Admin`]
//! door on connections of its own, so a busy page never holds the
//! intake's.

pub mod auth;
mod chart;
mod event;
mod events;
mod frame;
mod gallery;
pub mod html;
mod outbox;
mod overview;
mod request;

use std::sync::{Arc, Mutex};

use crate::live::{Live, Setup};
use crate::store::{Admin, Store};

pub use request::filter;

/// What the dashboard's pages share.
pub struct Dashboard {
    admin: Box<dyn Admin>,
    store: Arc<dyn Store>,
    live: Arc<Live<Setup>>,
    /// Sessions under the token now configured (rebuilt when a reload
    /// changes it, which ends every session).
    auth: Mutex<(Option<String>, Arc<auth::Auth>)>,
    /// Activity of hours long past, which no longer changes.
    hours: Mutex<overview::Hours>,
}

impl Dashboard {
    /// The dashboard over `admin` (its own door to the store), beside the
    /// daemon's `store` and live setup.
    pub fn new(admin: Box<dyn Admin>, store: Arc<dyn Store>, live: Arc<Live<Setup>>) -> Arc<Self> {
        let setup = live.load();
        let token = setup
            .config
            .dashboard
            .token
            .as_ref()
            .map(|t| t.expose().to_owned());
        let auth = Arc::new(auth::Auth::new(
            token.as_deref(),
            setup.config.dashboard.session,
        ));
        Arc::new(Self {
            admin,
            store,
            live,
            auth: Mutex::new((token, auth)),
            hours: Mutex::new(overview::Hours::default()),
        })
    }

    /// Sessions under the token the config holds now.
    fn auth(&self) -> Arc<auth::Auth> {
        let setup = self.live.load();
        let config = &setup.config.dashboard;
        let token = config.token.as_ref().map(|t| t.expose().to_owned());
        let mut held = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 != token {
            *held = (
                token.clone(),
                Arc::new(auth::Auth::new(token.as_deref(), config.session)),
            );
        }
        held.1.clone()
    }
}
