//! `replicate-relay preview --out DIR`: every notifier kind's template (the
//! shipped one, or yours with `--templates DIR`) rendered against every
//! sample event, as files to look at before changing a template: emails as
//! HTML pages and their plain-text part, Slack as Block Kit JSON with a link
//! that opens it in Slack's Block Kit Builder, every other kind as what it
//! sends; and an `index.html` that links them all.

use crate::notify::registry;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use handlebars::html_escape as html;

use crate::config::notifiers;
use crate::notify;
use crate::render::samples;

pub fn run(out: &Path, templates: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let Some(dir) = templates
        && !dir.is_dir()
    {
        anyhow::bail!(
            "--templates {}: not a directory (it holds email/, slack/, … as templates/ in the repository does)",
            dir.display()
        );
    }
    // One notifier of every kind, with made-up keys.
    let mut toml = String::new();
    for k in registry::all() {
        let _ = writeln!(
            toml,
            "[notifiers.{0}]\ntype = \"{0}\"\n{1}\n",
            k.name(),
            k.example()
        );
    }
    let listed = |problems: Vec<crate::config::read::Problem>| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        lines.join("\n  ")
    };
    let notifiers = notifiers::from_toml(&toml, templates).map_err(|problems| {
        anyhow::anyhow!("cannot make the preview notifiers:\n  {}", listed(problems))
    })?;
    let (compiled, problems) = registry::load_templates(templates, false);
    if !problems.is_empty() {
        anyhow::bail!("templates that do not compile:\n  {}", listed(problems));
    }

    let mut events: Vec<(String, crate::event::Event, Vec<u8>)> = samples::examples();
    for (label, event) in samples::samples() {
        let body = serde_json::to_vec(&event.payload)?;
        events.push((format!("sample {label}"), event, body));
    }

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut index = String::from(INDEX_HEAD);
    let mut written = 0;
    let mut failed = Vec::new();
    for (name, notifier) in &notifiers {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let _ = write!(index, "<h2>{}</h2>\n<table>\n", html(name));
        // A digest of every sample, for the kinds that have one.
        let digest = notifier
            .settings
            .kind()
            .required()
            .iter()
            .all(|f| compiled.has(*f, crate::render::digest::NAME))
            && !notifier.settings.kind().required().is_empty();
        let digest = digest.then(|| {
            let ctx = crate::render::digest::sample();
            let body = serde_json::to_vec(&ctx["group"]).unwrap_or_default();
            let message =
                notifier
                    .settings
                    .render(&compiled, Some(crate::render::digest::NAME), &ctx, &body);
            ("digest of every sample".to_owned(), message)
        });
        let singles = events.iter().map(|(label, event, body)| {
            let message = notify::message(&compiled, notifier, "preview", event, body, None);
            (label.clone(), message)
        });
        for (label, message) in singles.chain(digest) {
            let slug = label.replace(' ', "-");
            let _ = write!(index, "<tr><td>{}</td><td>", html(&label));
            for (ext, contents) in message.files() {
                let file = format!("{slug}.{ext}");
                std::fs::write(dir.join(&file), contents)
                    .with_context(|| format!("cannot write {}", dir.join(&file).display()))?;
                written += 1;
                let _ = write!(index, "<a href=\"{name}/{file}\">{ext}</a> ");
            }
            if let Some(why) = message.fallback() {
                failed.push(format!("{name} / {label}: {why}"));
                let _ = write!(
                    index,
                    "<span class=\"bad\">the template failed; this is the built-in message: {}</span>",
                    html(why)
                );
            }
            index.push_str("</td></tr>\n");
        }
        index.push_str("</table>\n");
    }
    index.push_str("</body>\n</html>\n");
    std::fs::write(out.join("index.html"), index)
        .with_context(|| format!("cannot write {}", out.join("index.html").display()))?;

    println!(
        "Wrote {written} files for {} kinds × {} events to {}; open {} in a browser.",
        notifiers.len(),
        events.len(),
        out.display(),
        out.join("index.html").display()
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failed {
            eprintln!("template failed: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

const INDEX_HEAD: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>replicate-relay: every template, every sample</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;}td{padding:2px 12px 2px 0;}.bad{color:#cf222e;}</style>
</head>
<body>
<h1>Every template, every sample</h1>
<p>Emails open as HTML pages (resize the window to see a phone); Slack messages as Block Kit JSON, and <code>builder-url.txt</code> holds a link that opens one in Slack's Block Kit Builder.</p>
";
