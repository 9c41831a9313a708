//! Small named values the daemon keeps across restarts (how far catching
//! up on Replicate's API has come), and which job ends already have
//! deliveries planned, in a SQLite store.

use rusqlite::{Connection, OptionalExtension, params};

pub fn load(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM relay_state WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

pub fn save(conn: &Connection, name: &str, value: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO relay_state (name, value, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
    )?
    .execute(params![name, value, now_ms])?;
    Ok(())
}

/// Those of `keys` some delivery was planned under (the unique index's
/// first column answers each).
pub fn planned(conn: &Connection, keys: &[String]) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM deliveries WHERE dedup_key = ?1 LIMIT 1")?;
    let mut out = Vec::new();
    for key in keys {
        if stmt.exists([key])? {
            out.push(key.clone());
        }
    }
    Ok(out)
}
