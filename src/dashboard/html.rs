//! The dashboard's HTML: every page's frame (header, navigation, the
//! logout form), escaping, and the small pieces pages share (times,
//! durations, status badges, links with a query). Every value from a
//! payload, a receiver or the config goes through [`esc`]; the only links
//! made are the dashboard's own.

pub use handlebars::html_escape as esc;

use crate::clock::format_time;

/// A page: `title`, which navigation item is current, the session's CSRF
/// token (for the logout form; none without a login), and the body.
pub struct Page<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    pub csrf: Option<&'a str>,
    /// Seconds between reloads while the tab is visible (the overview and
    /// the newest events).
    pub refresh: Option<u32>,
    pub body: String,
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/events", "Events"),
    ("/deliveries", "Dead & held"),
    ("/templates", "Templates"),
];

impl Page<'_> {
    pub fn render(&self) -> String {
        let mut nav = String::new();
        for (href, label) in NAV {
            let current = if *href == self.nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            nav.push_str(&format!("<a href=\"{href}\"{current}>{label}</a>"));
        }
        let logout = self.csrf.map_or(String::new(), |csrf| {
            format!(
                "<form method=\"post\" action=\"/logout\" class=\"logout\">{}<button>Log out</button></form>",
                csrf_field(csrf)
            )
        });
        let refresh = self
            .refresh
            .map_or(String::new(), |s| format!(" data-refresh=\"{s}\""));
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · replicate-relay</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
             <script src=\"/static/live.js\" defer></script></head>\
             <body><header><a class=\"brand\" href=\"/\">replicate-relay</a><nav>{nav}</nav>{logout}</header>\
             <main{refresh}>{}</main></body></html>\n",
            esc(self.title),
            self.body
        )
    }
}

/// The hidden field every POST form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// `ms` as a UTC time, in a `<time>` element.
pub fn time(ms: i64) -> String {
    format!("<time>{} UTC</time>", format_time(ms))
}

/// A duration in milliseconds, briefly: 850 ms, 4.2 s, 3 m 10 s, 2 h 5 m.
pub fn took(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} m {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A status (a job's, a delivery's, an attempt's) as a coloured badge.
pub fn badge(status: &str) -> String {
    let class = match status {
        "succeeded" | "delivered" | "ok" | "matched" => "good",
        "failed" | "dead" | "aborted" | "failing" => "bad",
        "canceled" | "held" | "paused" | "retry" => "warn",
        "no match" | "skipped" => "muted",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(status))
}

/// `path` with `params` as its query, each encoded.
pub fn href(path: &str, params: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if !v.is_empty() {
            query.append_pair(k, v);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// A byte count, briefly: 812 B, 4.1 KB, 2.3 GB.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    for (unit, size) in [("GB", 1e9), ("MB", 1e6), ("KB", 1e3)] {
        if n >= size {
            return format!("{:.1} {unit}", n / size);
        }
    }
    format!("{n} B")
}

/// The stylesheet, served as `/static/style.css`: light and dark, and a
/// single column on a phone.
pub const STYLE: &str = include_str!("style.css");

/// The page's only script, served as `/static/live.js`: reloads a page
/// that asks for it while the tab is visible and nothing is being typed.
pub const LIVE: &str = "(function(){var m=document.querySelector('main[data-refresh]');if(!m)return;\
var s=parseInt(m.getAttribute('data-refresh'),10)*1000;setInterval(function(){\
if(document.visibilityState==='visible'&&!(document.activeElement&&/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)))location.reload();},s);})();\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pieces_table() {
        assert_eq!(took(850), "850 ms");
        assert_eq!(took(4_200), "4.2 s");
        assert_eq!(took(190_000), "3 m 10 s");
        assert_eq!(took(7_500_000), "2 h 5 m");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(2_300_000_000), "2.3 GB");
        assert_eq!(
            href(
                "/events",
                &[("job", "a b&c".into()), ("kind", String::new())]
            ),
            "/events?job=a+b%26c"
        );
        assert_eq!(badge("<x>"), "<span class=\"badge info\">&lt;x&gt;</span>");
        let page = Page {
            title: "<t>",
            nav: "/events",
            csrf: Some("tok\""),
            refresh: Some(10),
            body: "<p>b</p>".into(),
        }
        .render();
        assert!(page.contains("<title>&lt;t&gt; · replicate-relay</title>"));
        assert!(page.contains("<a href=\"/events\" aria-current=\"page\">Events</a>"));
        assert!(page.contains("value=\"tok&quot;\""));
        assert!(page.contains("<main data-refresh=\"10\"><p>b</p></main>"));
    }
}
