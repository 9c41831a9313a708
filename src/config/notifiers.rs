//! `[notifiers.<name>]`: where messages go. What every notifier has (`type`,
//! `template`, `concurrency`) is read here; the keys of its kind are read by
//! the kind itself (`notify/<kind>/`), found in the registry by `type`.

use crate::notify::registry;
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::read::{Reader, Table};
use crate::notify::Notifier;

const COMMON: &[&str] = &["type", "template", "concurrency"];

/// Notifiers read from `text`, TOML holding `[notifiers.<name>]` tables
/// alone (previews build theirs so), with templates under `templates`.
pub fn from_toml(
    text: &str,
    templates: Option<&Path>,
) -> Result<BTreeMap<String, Notifier>, Vec<crate::config::read::Problem>> {
    let root: Value = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            vec![crate::config::read::Problem {
                key: String::new(),
                message: e.to_string(),
            }]
        })?;
    let mut r = Reader::new(std::path::PathBuf::new());
    let notifiers = read(&mut r, root.get("notifiers"), templates);
    if r.problems.is_empty() {
        Ok(notifiers)
    } else {
        Err(r.problems)
    }
}

/// Reads every `[notifiers.<name>]`, checking that each names templates that
/// exist: built in, or under the `templates` directory.
pub fn read(
    r: &mut Reader,
    value: Option<&Value>,
    templates: Option<&Path>,
) -> BTreeMap<String, Notifier> {
    let mut out = BTreeMap::new();
    let Some(all) = r.table(value, "notifiers") else {
        return out;
    };
    for (name, value) in all.map {
        let path = format!("notifiers.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.error(
                &path,
                "a notifier name may only use letters, digits, `-` and `_`",
            );
        }
        let Some(t) = r.table(Some(value), &path) else {
            continue;
        };
        if let Some(n) = read_one(r, t, name, templates) {
            out.insert(name.clone(), n);
        }
    }
    out
}

fn read_one(
    r: &mut Reader,
    t: Table<'_>,
    name: &str,
    templates: Option<&Path>,
) -> Option<Notifier> {
    let type_name = r.string(t, "type");
    let known = registry::names().join(", ");
    let kind = match type_name.as_deref() {
        Some(wanted) => match registry::find(wanted) {
            Some(kind) => kind,
            None => {
                r.error(
                    t.key("type"),
                    format!("unknown type `{wanted}` (known: {known})"),
                );
                return None;
            }
        },
        None => {
            r.error(t.key("type"), format!("missing; set type = one of {known}"));
            return None;
        }
    };
    r.known_keys(t, &[COMMON, kind.keys()].concat());
    let settings = kind.read(r, t)?;

    let template = r
        .string(t, "template")
        .or_else(|| kind.default_template().map(str::to_owned));
    if let Some(template) = &template {
        for format in kind.required() {
            if !registry::template_exists(templates, *format, template) {
                r.error(
                    t.key("template"),
                    format!(
                        "no template `{template}` for {}: create {}",
                        kind.name(),
                        format.relative_path(template)
                    ),
                );
            }
        }
    }
    let concurrency = match r.uint(t, "concurrency") {
        Some(0) => {
            r.error(t.key("concurrency"), "must be at least 1");
            1
        }
        Some(n) => n.min(256) as usize,
        None => kind.default_concurrency(),
    };
    Some(Notifier {
        name: name.to_owned(),
        template,
        settings,
        concurrency,
    })
}
