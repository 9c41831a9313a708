//! The overview's two small charts, as inline SVG (no script): the last
//! 24 hours' events by status, stacked by hour, and the time from receipt
//! to delivery (median and 95th percentile) by hour.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::esc;
use crate::store::browse::Activity;

const W: f64 = 720.0;
const H: f64 = 120.0;
const HOURS: i64 = 24;

/// Colours by status, in stacking order (the rest are "other").
const STATUSES: &[(&str, &str)] = &[
    ("succeeded", "#2da44e"),
    ("failed", "#cf222e"),
    ("canceled", "#8c959f"),
    ("aborted", "#bf8700"),
];
const OTHER: &str = "#54aeff";

/// Events by hour and status, the hours ending with `now_hour`.
pub fn events(activity: &Activity, now_hour: i64) -> String {
    let mut by_hour: BTreeMap<i64, BTreeMap<&str, i64>> = BTreeMap::new();
    for (hour, status, n) in &activity.events {
        let key = STATUSES
            .iter()
            .find(|(s, _)| s == status)
            .map_or("other", |(s, _)| s);
        *by_hour.entry(*hour).or_default().entry(key).or_default() += n;
    }
    let max = by_hour
        .values()
        .map(|m| m.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = W / HOURS as f64;
    let mut out = svg_head("Events per hour by status");
    for i in 0..HOURS {
        let hour = now_hour - (HOURS - 1) + i;
        let x = i as f64 * bar;
        let mut y = H;
        let counts = by_hour.get(&hour);
        for (status, colour) in STATUSES.iter().chain(&[("other", OTHER)]) {
            let n = counts.and_then(|c| c.get(status)).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = n as f64 / max as f64 * H;
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {}: {n}</title></rect>",
                bar - 2.0,
                hour_label(hour),
                esc(status)
            );
        }
    }
    axis(&mut out, max, now_hour);
    out.push_str("</svg>");
    let mut legend = String::from("<div class=\"legend\">");
    // Classes, not style attributes: the page's policy allows no inline style.
    for (status, _) in STATUSES.iter().chain(&[("other", OTHER)]) {
        let _ = write!(legend, "<span><i class=\"sw-{status}\"></i>{status}</span>");
    }
    legend.push_str("</div>");
    out + &legend
}

/// Delivery times by hour: the median as a bar, the 95th percentile as a mark.
pub fn latency(activity: &Activity, now_hour: i64) -> String {
    let mut by_hour: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (hour, ms) in &activity.latencies {
        by_hour.entry(*hour).or_default().push((*ms).max(0));
    }
    let stats: BTreeMap<i64, (i64, i64)> = by_hour
        .into_iter()
        .map(|(h, mut v)| {
            v.sort_unstable();
            (h, (percentile(&v, 50), percentile(&v, 95)))
        })
        .collect();
    let max = stats
        .values()
        .map(|(_, p95)| *p95)
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = W / HOURS as f64;
    let mut out = svg_head("Time from receipt to delivery per hour");
    for i in 0..HOURS {
        let hour = now_hour - (HOURS - 1) + i;
        let Some((p50, p95)) = stats.get(&hour) else {
            continue;
        };
        let x = i as f64 * bar;
        let h = *p50 as f64 / max as f64 * H;
        let y95 = H - *p95 as f64 / max as f64 * H;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#54aeff\"><title>{}: median {}, p95 {}</title></rect>\
             <rect x=\"{x:.1}\" y=\"{y95:.1}\" width=\"{:.1}\" height=\"2\" fill=\"#cf222e\"/>",
            H - h,
            bar - 2.0,
            hour_label(hour),
            super::html::took(*p50),
            super::html::took(*p95),
            bar - 2.0
        );
    }
    axis_ms(&mut out, max, now_hour);
    out.push_str("</svg><div class=\"legend\"><span><i class=\"sw-median\"></i>median</span><span><i class=\"sw-p95\"></i>95th percentile</span></div>");
    out
}

/// The `p`th percentile of sorted `values` (nearest rank).
pub fn percentile(values: &[i64], p: usize) -> i64 {
    if values.is_empty() {
        return 0;
    }
    let rank = (p * values.len()).div_ceil(100).max(1);
    values[rank.min(values.len()) - 1]
}

fn svg_head(label: &str) -> String {
    format!(
        "<svg class=\"chart\" viewBox=\"0 -12 {W} {}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{label}\">",
        H + 26.0
    )
}

fn hour_label(hour: i64) -> String {
    format!("{:02}:00", hour.rem_euclid(24))
}

fn axis(out: &mut String, max: i64, now_hour: i64) {
    let _ = write!(out, "<text x=\"2\" y=\"-2\">{max}</text>");
    hours(out, now_hour);
}

fn axis_ms(out: &mut String, max: i64, now_hour: i64) {
    let _ = write!(
        out,
        "<text x=\"2\" y=\"-2\">{}</text>",
        super::html::took(max)
    );
    hours(out, now_hour);
}

fn hours(out: &mut String, now_hour: i64) {
    let bar = W / HOURS as f64;
    for i in (0..HOURS).step_by(6) {
        let hour = now_hour - (HOURS - 1) + i;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\">{} UTC</text>",
            i as f64 * bar,
            H + 12.0,
            hour_label(hour)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_bars() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[5], 95), 5);
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        let activity = Activity {
            events: vec![
                (100, "succeeded".into(), 3),
                (100, "failed".into(), 1),
                (99, "<script>".into(), 2),
            ],
            latencies: vec![(100, 1_000), (100, 3_000)],
        };
        let svg = events(&activity, 100);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("04:00 succeeded: 3"), "{svg}");
        assert!(!svg.contains("<script>"));
        let svg = latency(&activity, 100);
        assert!(svg.contains("median 1.0 s, p95 3.0 s"), "{svg}");
    }
}
