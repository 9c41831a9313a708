//! `replicate-relay events`: the most recent stored events, as a table or
//! JSON lines, each with its source (a webhook, or catching up on one that
//! never came).

use std::io::Write;
use std::process::ExitCode;

use crate::config::Config;
use crate::store;

pub async fn run(config: &Config, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let events = store::open_admin(&config.store)?.recent(limit).await?;
    let mut out = std::io::stdout().lock();
    if json {
        for e in &events {
            let line = serde_json::json!({
                "seq": e.seq,
                "received_at": format_time(e.received_at_ms),
                "kind": e.kind.as_str(),
                "id": e.object_id,
                "status": e.status.as_str(),
                "model": e.model,
                "webhook_id": e.webhook_id,
                "source": crate::replicate::catch_up::source(&e.webhook_id),
                "query": e.query,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        writeln!(
            out,
            "No events stored yet in {}.",
            config.store.path.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 7]> = events
        .iter()
        .map(|e| {
            [
                format_time(e.received_at_ms),
                e.kind.to_string(),
                e.status.to_string(),
                e.object_id.clone(),
                e.model.clone().unwrap_or_else(|| "-".into()),
                crate::replicate::catch_up::source(&e.webhook_id).to_owned(),
                e.webhook_id.clone(),
            ]
        })
        .collect();
    let header = [
        "RECEIVED (UTC)",
        "KIND",
        "STATUS",
        "ID",
        "MODEL",
        "SOURCE",
        "WEBHOOK-ID",
    ]
    .map(String::from);
    write_table(&mut out, &header, &rows)?;
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub use crate::clock::format_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let header = ["A", "LONG HEADER", "C"].map(String::from);
        let rows = vec![["xxxx", "y", "last"].map(String::from)];
        let mut out = Vec::new();
        write_table(&mut out, &header, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A     LONG HEADER  C\nxxxx  y            last\n"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time(1_795_183_396_000), "2026-11-20 14:03:16");
    }
}
