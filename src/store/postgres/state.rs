//! Small named values every instance shares across restarts (how far
//! catching up on Replicate's API has come), and which job ends already
//! have deliveries planned, in a PostgreSQL store.

use tokio_postgres::GenericClient;

use super::outbox::Result;

pub async fn load(c: &impl GenericClient, name: &str) -> Result<Option<String>> {
    Ok(
        c.query_opt("SELECT value FROM relay_state WHERE name = $1", &[&name])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?,
    )
}

pub async fn save(c: &impl GenericClient, name: &str, value: &str, now_ms: i64) -> Result<()> {
    c.execute(
        "INSERT INTO relay_state (name, value, updated_ms) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
        &[&name, &value, &now_ms],
    )
    .await?;
    Ok(())
}

/// Those of `keys` some delivery was planned under.
pub async fn planned(c: &impl GenericClient, keys: &[String]) -> Result<Vec<String>> {
    c.query(
        "SELECT DISTINCT dedup_key FROM deliveries WHERE dedup_key = ANY($1)",
        &[&keys],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}
