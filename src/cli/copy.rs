//! `replicate-relay store copy --to TARGET`: the config's store, copied
//! into another (a SQLite file to a PostgreSQL database, or back), through
//! both stores' doors ([`crate::store::copy`]).
//!
//! The source must be quiet: a daemon still writing it would take
//! webhooks the copy never sees. A SQLite source's daemon lock is held for
//! the whole copy, so no daemon starts on it meanwhile; a PostgreSQL
//! source is asked for daemons' sessions before and after.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::{Config, PostgresConfig, Sensitive, StoreConfig};
use crate::store;

/// The store `to` names: a `postgres://` URL, or a SQLite file's path.
fn target(
    to: &str,
    password_file: Option<&Path>,
    source: &StoreConfig,
) -> anyhow::Result<StoreConfig> {
    let postgres = to.starts_with("postgres://") || to.starts_with("postgresql://");
    if !postgres && password_file.is_some() {
        bail!("--password-file is for a postgres:// target; {to} is a SQLite file");
    }
    let password = match password_file {
        Some(file) => Some(Sensitive::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --password-file {}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        )),
        None => None,
    };
    Ok(StoreConfig {
        path: if postgres {
            source.path.clone()
        } else {
            PathBuf::from(to)
        },
        keep: source.keep,
        postgres: postgres.then(|| PostgresConfig {
            url: Sensitive::new(to),
            password,
            instance: "store-copy".into(),
        }),
    })
}

/// The store as messages show it.
fn shown(config: &StoreConfig) -> String {
    match &config.postgres {
        Some(pg) => crate::notify::http::shown_url(pg.url.expose()),
        None => config.path.display().to_string(),
    }
}

pub async fn run(
    config: &Config,
    to: &str,
    password_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let source = &config.store;
    let target = target(to, password_file, source)?;
    let same = match (&source.postgres, &target.postgres) {
        (Some(a), Some(b)) => a.url.expose() == b.url.expose(),
        (None, None) => same_file(&source.path, &target.path),
        _ => false,
    };
    if same {
        bail!(
            "--to names the config's own store ({}); name another",
            shown(source)
        );
    }
    let quiet = || async {
        let daemons = store::daemons_on(source).await.with_context(|| {
            format!("cannot tell whether a daemon is writing {}", shown(source))
        })?;
        if !daemons.is_empty() {
            bail!(
                "a daemon is still writing {} ({}): stop every daemon on it first (systemctl stop replicate-relay), so no webhook is stored after the copy has read past it. Start the daemons on the new store before, and Replicate's retries reach them.",
                shown(source),
                daemons.join("; ")
            );
        }
        anyhow::Ok(())
    };
    quiet().await?;
    // No daemon starts on a SQLite source while it is read.
    let _held = match source.postgres {
        None => Some(
            store::sqlite::daemon_lock::take(&source.path)
                .with_context(|| format!("cannot hold {} for the copy", shown(source)))?,
        ),
        Some(_) => None,
    };
    let from = store::open_admin(source)?;
    let into = store::open(&target, None)
        .await
        .with_context(|| format!("cannot open the target store {}", shown(&target)))?;
    eprintln!("Copying {} into {}…", shown(source), shown(&target));
    let copied = store::copy::copy(from.as_ref(), into.as_ref(), |done| {
        if (done.events + done.already_there) % 10_240 == 0 {
            eprintln!("  {} events so far", done.events + done.already_there);
        }
    })
    .await;
    into.close().await;
    let copied = copied.with_context(|| {
        "the copy stopped; what was copied stays, and running it again carries on (what is there already is not copied twice)"
    })?;
    if source.postgres.is_some() {
        quiet().await?;
    }
    println!(
        "Copied {} event{} with {} deliver{} still to send into {}; {} already there.",
        copied.events,
        if copied.events == 1 { "" } else { "s" },
        copied.waiting,
        if copied.waiting == 1 { "y" } else { "ies" },
        shown(&target),
        copied.already_there,
    );
    println!(
        "Next: point [store] at it in the config and start the daemon. Deliveries already delivered or dead stayed behind with the old store."
    );
    Ok(ExitCode::SUCCESS)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
