//! What a config reload swaps: everything built from one config (compiled
//! templates, notifier senders, the signature verifier), published
//! atomically. Readers take the version current when they look and keep it for
//! the whole request or send, so in-flight work finishes with the config it
//! started with.

use crate::notify::registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors};
use crate::notify::{self, BuildError, Notify};
use crate::render::Templates;
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
    /// The built-in templates, overridden by those under `[templates] dir`.
    pub templates: Arc<Templates>,
    /// `None` only with `[verify] insecure = true`.
    pub verifier: Option<Verifier>,
    pub senders: BTreeMap<String, Arc<dyn Notify>>,
    /// The top-level payload fields the routes look at, so routing parses only
    /// those.
    pub route_keys: BTreeSet<String>,
}

/// Why a config could not go live (the running one, if any, stays).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A template does not compile.
    #[error(transparent)]
    Templates(#[from] ConfigErrors),
    #[error(transparent)]
    Notifier(#[from] BuildError),
}

/// Compiles the templates `config` names: the built-in ones, overridden by
/// those under its templates directory. Every compile problem is returned,
/// located as `file:line:column`.
pub fn templates(config: &Config) -> Result<Templates, ConfigErrors> {
    let (templates, problems) = registry::load_templates(config.templates.dir.as_deref(), false);
    if problems.is_empty() {
        Ok(templates)
    } else {
        Err(ConfigErrors {
            file: config.file.clone(),
            problems,
        })
    }
}

impl Setup {
    /// Compiles the templates and builds notifier clients and the signature
    /// verifier for `config`.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Self, SetupError> {
        let templates = Arc::new(templates(&config)?);
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
            templates,
            verifier,
            senders,
            route_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    /// A config under a fresh directory, with a `templates/` holding `files`.
    fn config(notifier: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join("templates").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            format!("[verify]\ninsecure = true\n[notifiers.console]\ntype = \"log\"\n{notifier}"),
        )
        .unwrap();
        let config = crate::config::load_with_env(&file, []).unwrap_or_else(|e| panic!("{e}"));
        (dir, config)
    }

    #[test]
    fn templates_compile_when_the_config_goes_live() {
        // Found beside the config, overriding nothing: it goes live.
        let ok = "{{id}} {{status}}";
        let (_d, cfg) = config(
            "template = \"mine\"",
            &[("email/mine.subject.hbs", ok), ("email/mine.txt.hbs", ok)],
        );
        let setup = Setup::build(cfg, Arc::new(SystemClock)).unwrap();
        assert!(setup.templates.dir.is_some());

        // One that does not compile: the config reads (it names files that
        // exist), but it cannot go live, and the error says where.
        let (_d, cfg) = config(
            "template = \"mine\"",
            &[
                ("email/mine.subject.hbs", ok),
                ("email/mine.txt.hbs", "line one\n{{#if x}}"),
            ],
        );
        let Err(SetupError::Templates(errors)) = Setup::build(cfg, Arc::new(SystemClock)) else {
            panic!("a broken template went live");
        };
        let text = errors.to_string();
        assert!(text.contains("email/mine.txt.hbs"), "{text}");
        assert!(text.contains("does not compile"), "{text}");
    }

    #[test]
    fn a_template_nobody_wrote_is_a_config_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "[verify]\ninsecure = true\n[notifiers.console]\ntype = \"log\"\ntemplate = \"nope\"\n",
        )
        .unwrap();
        let err = crate::config::load_with_env(&file, []).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems
                .iter()
                .all(|p| p.key == "notifiers.console.template")
        );
        assert!(
            err.to_string().contains("create email/nope.txt.hbs"),
            "{err}"
        );
    }
}
