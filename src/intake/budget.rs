//! The memory request bodies may hold while they are read, before their
//! signature is checked: one budget shared by every such body.
//!
//! Anyone who can reach the port can start a body; only Replicate can sign
//! one. Each body is charged for the buffer it grows as its bytes arrive
//! (never for the length it declares, which costs a stranger nothing to
//! claim), and gives its share back once its signature is verified or it is
//! refused. Past the budget a body is refused with 503 at once, so memory
//! stays bounded whatever strangers send; Replicate retries a 503.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes, so a semaphore's
/// permit count covers any size on any platform.
const UNIT: u64 = 1024;

/// One budget for all unverified bodies.
#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    bytes: u64,
}

/// What one body holds of the [`Budget`]; given back when dropped.
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

/// The budget is spent: the body cannot grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub budget: u64,
}

impl Budget {
    pub fn new(bytes: u64) -> Self {
        let units = bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            units: Arc::new(Semaphore::new(units)),
            bytes,
        }
    }

    /// How many bytes are held by bodies being read now.
    pub fn in_use(&self) -> u64 {
        let total = self.bytes.div_ceil(UNIT);
        total.saturating_sub(self.units.available_permits() as u64) * UNIT
    }

    /// Charges `held` for `bytes` more, or refuses without waiting.
    pub fn grow(&self, held: &mut Held, bytes: usize) -> Result<(), Exhausted> {
        let units = (bytes as u64).div_ceil(UNIT);
        let refused = Exhausted { budget: self.bytes };
        let units = u32::try_from(units).map_err(|_| refused)?;
        let more = self
            .units
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| refused)?;
        match &mut held.0 {
            Some(permit) => permit.merge(more),
            None => held.0 = Some(more),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_one_budget_and_give_it_back() {
        let budget = Budget::new(10 * 1024);
        let (mut a, mut b) = (Held::default(), Held::default());
        assert_eq!(budget.grow(&mut a, 6 * 1024), Ok(()));
        assert_eq!(budget.in_use(), 6 * 1024);
        // Rounded up to whole units: 4 KiB and a byte is 5 units.
        assert_eq!(
            budget.grow(&mut b, 4 * 1024 + 1),
            Err(Exhausted { budget: 10 * 1024 })
        );
        assert_eq!(budget.grow(&mut b, 4 * 1024), Ok(()));
        assert_eq!(budget.grow(&mut a, 1), Err(Exhausted { budget: 10 * 1024 }));
        drop(a);
        assert_eq!(budget.in_use(), 4 * 1024);
        assert_eq!(budget.grow(&mut b, 6 * 1024), Ok(()));
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_request_past_any_count_is_refused_not_wrapped() {
        let budget = Budget::new(1024);
        let mut held = Held::default();
        assert!(budget.grow(&mut held, usize::MAX).is_err());
        assert_eq!(budget.in_use(), 0);
    }
}
