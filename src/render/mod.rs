//! Rendering: the machinery that turns an event into the text of a message,
//! with handlebars templates from `[templates] dir` (built-in defaults
//! otherwise). Which formats exist, their default templates and how a
//! message is assembled from them belong to each notifier kind
//! (`notify/<kind>/`); this module compiles and renders templates of any
//! [`Format`] a kind declares.
//!
//! One registry per output format, because escaping is per registry (HTML for
//! email bodies, JSON plus Slack mrkdwn for Block Kit, …); every escape
//! first applies the display rule ([`display`]) that all payload text goes
//! through, and kinds keep their services' limits with [`cut`]. Rendering never
//! fails from the caller's point of view: a kind falls back to a built-in
//! plain message when a template errors or produces invalid JSON
//! ([`Rendered::or_fallback`]), and the reason is logged and returned, so a
//! notification is never lost to a template.

pub mod context;
pub mod cut;
pub mod digest;
pub mod display;
pub mod helpers;
pub mod kept;
pub mod message;
pub mod run;
pub mod samples;
pub mod text;

pub use message::Message;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::Value;

use crate::config::read::Problem;

/// An output format: the subdirectory and file suffix of its templates, how
/// values are escaped in them, and whether they render JSON. Each notifier
/// kind declares the formats it renders; two formats are the same when their
/// files are.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Subdirectory of the templates directory (`email`, `slack`, …).
    pub dir: &'static str,
    /// What follows the template name in a file name (`.subject.hbs`).
    pub suffix: &'static str,
    /// The escape applied to every `{{value}}` (not `{{{value}}}`).
    pub escape: fn(&str) -> String,
    /// Whether the output must be JSON (checked by `check`).
    pub json: bool,
}

impl Format {
    pub const fn new(
        dir: &'static str,
        suffix: &'static str,
        escape: fn(&str) -> String,
        json: bool,
    ) -> Self {
        Self {
            dir,
            suffix,
            escape,
            json,
        }
    }

    /// Where template `name` of this format lives under the templates directory.
    pub fn relative_path(self, name: &str) -> String {
        format!("{}/{name}{}", self.dir, self.suffix)
    }

    fn key(&self) -> (&'static str, &'static str) {
        (self.dir, self.suffix)
    }
}

impl PartialEq for Format {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Format {}

impl PartialOrd for Format {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Format {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// A template compiled into the binary, named `default`: its format and its
/// source. `templates/` in the repository holds the same files, as a starting
/// point for your own.
pub type BuiltIn = (Format, &'static str);

/// Compiled templates of every format.
pub struct Templates {
    registries: BTreeMap<Format, Handlebars<'static>>,
    /// Where each template came from: a file path, or "built-in".
    origins: BTreeMap<(Format, String), String>,
    /// The directory they were read from, if any.
    pub dir: Option<PathBuf>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field(
                "templates",
                &self
                    .origins
                    .keys()
                    .map(|(f, n)| f.relative_path(n))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A template that failed to render, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// `path:line:column` (or `path` when handlebars gives no position).
    pub location: String,
    pub reason: String,
}

impl fmt::Display for RenderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// A rendered message, and why the built-in fallback was used, if it was.
#[derive(Debug, Clone)]
pub struct Rendered<T> {
    pub message: T,
    pub fallback: Option<String>,
}

impl<T> Rendered<T> {
    /// The rendered message, or — when the template failed — the built-in one
    /// from `fallback`, with the failure logged and kept as the reason.
    pub fn or_fallback(
        attempt: Result<T, RenderFailure>,
        format: &str,
        template: &str,
        fallback: impl FnOnce(&str) -> T,
    ) -> Self {
        match attempt {
            Ok(message) => Rendered {
                message,
                fallback: None,
            },
            Err(failure) => {
                let reason = failure.to_string();
                tracing::error!(
                    message = "Template failed; sending the built-in message instead.",
                    format,
                    template,
                    %reason
                );
                Rendered {
                    message: fallback(&reason),
                    fallback: Some(reason),
                }
            }
        }
    }
}

impl Templates {
    /// Compiles the `built_in` templates (named `default`) and `digests`
    /// (named `digest`), then every template of `formats` under `dir`
    /// (overriding built-ins of the same name). Returns every compile
    /// problem, located as `file:line:column`. `strict` makes a missing
    /// variable a render error (for `check`).
    pub fn load(
        dir: Option<&Path>,
        strict: bool,
        formats: &[Format],
        built_in: &[BuiltIn],
        digests: &[BuiltIn],
    ) -> (Self, Vec<Problem>) {
        let mut t = Templates {
            registries: BTreeMap::new(),
            origins: BTreeMap::new(),
            dir: dir.map(Path::to_owned),
        };
        for format in formats.iter().chain(built_in.iter().map(|(f, _)| f)) {
            t.registries.entry(*format).or_insert_with(|| {
                let mut hb = Handlebars::new();
                hb.set_strict_mode(strict);
                hb.register_escape_fn(format.escape);
                helpers::register(&mut hb);
                hb
            });
        }
        let mut problems = Vec::new();
        let named = built_in
            .iter()
            .map(|b| ("default", b))
            .chain(digests.iter().map(|b| (digest::NAME, b)));
        for (name, (format, source)) in named {
            let origin = format!("built-in {}", format.relative_path(name));
            if let Err(p) = t.add(*format, name, source, &origin) {
                problems.push(p);
            }
        }
        if let Some(dir) = dir {
            let subs: BTreeSet<&str> = t.registries.keys().map(|f| f.dir).collect();
            for sub in subs {
                problems.extend(t.add_dir(&dir.join(sub), sub));
            }
        }
        (t, problems)
    }

    /// The formats whose templates live in subdirectory `sub`.
    fn formats_in(&self, sub: &str) -> Vec<Format> {
        self.registries
            .keys()
            .filter(|f| f.dir == sub)
            .copied()
            .collect()
    }

    fn add_dir(&mut self, dir: &Path, sub: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return problems; // an absent subdirectory just means "built-ins only"
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !file_name.ends_with(".hbs") {
                continue;
            }
            let found = self
                .formats_in(sub)
                .into_iter()
                .find_map(|f| file_name.strip_suffix(f.suffix).map(|name| (f, name)));
            let Some((format, name)) = found.filter(|(_, name)| !name.is_empty()) else {
                let expected: Vec<String> = self
                    .formats_in(sub)
                    .into_iter()
                    .map(|f| format!("NAME{}", f.suffix))
                    .collect();
                problems.push(Problem {
                    key: path.display().to_string(),
                    message: format!(
                        "not a template name this daemon reads; in {sub}/ use {}",
                        expected.join(", ")
                    ),
                });
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    if let Err(p) = self.add(format, name, &source, &path.display().to_string()) {
                        problems.push(p);
                    }
                }
                Err(e) => problems.push(Problem {
                    key: path.display().to_string(),
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        problems
    }

    fn add(
        &mut self,
        format: Format,
        name: &str,
        source: &str,
        origin: &str,
    ) -> Result<(), Problem> {
        let hb = self
            .registries
            .get_mut(&format)
            .expect("a registry per format");
        hb.register_template_string(name, source).map_err(|e| {
            let location = match e.pos() {
                Some((line, col)) => format!("{origin}:{line}:{col}"),
                None => origin.to_owned(),
            };
            Problem {
                key: location,
                message: format!("template does not compile: {}", e.reason()),
            }
        })?;
        self.origins
            .insert((format, name.to_owned()), origin.to_owned());
        Ok(())
    }

    pub fn has(&self, format: Format, name: &str) -> bool {
        self.origins.contains_key(&(format, name.to_owned()))
    }

    /// Template names of `format`, sorted.
    pub fn names(&self, format: Format) -> Vec<String> {
        self.origins
            .keys()
            .filter(|(f, _)| *f == format)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Renders one template, or says where and why it failed.
    pub fn render(&self, format: Format, name: &str, ctx: &Value) -> Result<String, RenderFailure> {
        let origin = self
            .origins
            .get(&(format, name.to_owned()))
            .cloned()
            .unwrap_or_else(|| format.relative_path(name));
        let Some(registry) = self.registries.get(&format) else {
            return Err(RenderFailure {
                location: origin,
                reason: "no such format is loaded".into(),
            });
        };
        registry.render(name, ctx).map_err(|e| {
            let location = match (e.line_no, e.column_no) {
                (Some(line), Some(col)) => format!("{origin}:{line}:{col}"),
                _ => origin,
            };
            RenderFailure {
                location,
                reason: e.reason().to_string(),
            }
        })
    }
}

/// `text` as JSON, or where and why it is not.
pub fn parse_json(text: &str, format: Format, name: &str) -> Result<Value, RenderFailure> {
    serde_json::from_str(text).map_err(|e| RenderFailure {
        location: format.relative_path(name),
        reason: format!(
            "renders invalid JSON ({e}); line {} column {} of the output is:\n{}",
            e.line(),
            e.column(),
            text.lines().nth(e.line().saturating_sub(1)).unwrap_or("")
        ),
    })
}

/// The string at `key` of a template context, or "".
pub fn field<'a>(ctx: &'a Value, key: &str) -> &'a str {
    ctx.get(key).and_then(Value::as_str).unwrap_or("")
}

/// "✅ Training acme/neon succeeded in 19m 51s": the title every built-in
/// fallback leads with.
pub fn plain_title(ctx: &Value) -> String {
    let mut title = format!("{} {}", field(ctx, "emoji"), field(ctx, "title"));
    if let Some(d) = ctx.get("duration").and_then(Value::as_str) {
        title.push_str(&format!(" in {d}"));
    }
    title
}

/// Renders every template of every format against every built-in sample in
/// strict mode, so a misspelled variable or a template that produces invalid
/// JSON is reported (file:line:column) before production. Compile problems are
/// reported by config loading, not here.
pub fn check(
    dir: Option<&Path>,
    formats: &[Format],
    built_in: &[BuiltIn],
    digests: &[BuiltIn],
) -> Vec<Problem> {
    let (strict, compile_problems) = Templates::load(dir, true, formats, built_in, digests);
    if !compile_problems.is_empty() {
        return Vec::new();
    }
    let samples = samples::samples();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for format in strict.registries.keys() {
        for name in strict.names(*format) {
            // A digest tells a group of jobs: it is rendered with one.
            let contexts: Vec<(String, Value)> = if name == digest::NAME {
                vec![("group of every sample".to_owned(), digest::sample())]
            } else {
                samples
                    .iter()
                    .map(|(label, event)| {
                        let ctx = context::context(event, "sample route", "sample-notifier");
                        (label.clone(), ctx)
                    })
                    .collect()
            };
            for (label, ctx) in &contexts {
                let outcome = strict.render(*format, &name, ctx).and_then(|text| {
                    if format.json {
                        parse_json(&text, *format, &name).map(|_| ())
                    } else {
                        Ok(())
                    }
                });
                if let Err(failure) = outcome
                    && seen.insert((failure.location.clone(), failure.reason.clone()))
                {
                    problems.push(Problem {
                        key: failure.location,
                        message: format!("{} (with the sample {label})", failure.reason),
                    });
                }
            }
        }
    }
    problems
}
