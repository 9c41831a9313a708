//! Which claims the dispatcher holds, and which notifiers' claims must be
//! squared with the store.
//!
//! A claim is a committed write. When the store goes away mid-commit the
//! commit may have gone through with its answer lost: the store then has
//! deliveries `sending` under this instance that no task sends, and they
//! would wait out their lease (ten minutes on a shared store, the next start
//! on SQLite). The same holds for a send whose result could not be recorded.
//! After either, once the store answers again, the dispatcher releases the
//! notifier's claims it does not hold ([`crate::store::Store::release`]).

use std::collections::{HashMap, HashSet};

use tokio::task::{Id, JoinError};

/// The dispatcher's claims in flight and the notifiers to square.
#[derive(Default)]
pub struct Held {
    tasks: HashMap<Id, (String, i64)>,
    by_notifier: HashMap<String, HashSet<i64>>,
    unsure: HashSet<String>,
}

impl Held {
    /// Delivery `id` of `notifier` is being sent by task `task`.
    pub fn took(&mut self, task: Id, notifier: &str, id: i64) {
        self.tasks.insert(task, (notifier.to_owned(), id));
        self.by_notifier
            .entry(notifier.to_owned())
            .or_default()
            .insert(id);
    }

    /// A task ended, saying whether its result was recorded, or panicked
    /// outside the attempt (its result then unknown to the store).
    pub fn ended(&mut self, joined: Result<(Id, bool), JoinError>) {
        let (task, recorded) = match joined {
            Ok(ended) => ended,
            Err(e) => (e.id(), false),
        };
        let Some((notifier, id)) = self.tasks.remove(&task) else {
            return;
        };
        if let Some(ids) = self.by_notifier.get_mut(&notifier) {
            ids.remove(&id);
        }
        if !recorded {
            self.unsure.insert(notifier);
        }
    }

    /// A claim for `notifier` failed: it may have been committed.
    pub fn claim_failed(&mut self, notifier: &str) {
        self.unsure.insert(notifier.to_owned());
    }

    /// When `notifier`'s claims must be squared first: the deliveries it
    /// still holds, to keep.
    pub fn to_square(&self, notifier: &str) -> Option<Vec<i64>> {
        self.unsure.contains(notifier).then(|| {
            self.by_notifier
                .get(notifier)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    /// `notifier`'s claims are squared with the store.
    pub fn squared(&mut self, notifier: &str) {
        self.unsure.remove(notifier);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn task_ids(n: usize) -> Vec<Id> {
        let mut set = tokio::task::JoinSet::new();
        let ids = (0..n).map(|_| set.spawn(async {}).id()).collect();
        while set.join_next().await.is_some() {}
        ids
    }

    #[tokio::test]
    async fn only_a_failed_claim_or_an_unrecorded_result_asks_for_squaring() {
        let ids = task_ids(3).await;
        let mut held = Held::default();
        held.took(ids[0], "slack", 1);
        held.took(ids[1], "slack", 2);
        held.took(ids[2], "mail", 3);
        assert_eq!(held.to_square("slack"), None);

        held.ended(Ok((ids[0], true)));
        assert_eq!(held.to_square("slack"), None, "recorded: nothing to square");

        held.claim_failed("slack");
        assert_eq!(held.to_square("slack"), Some(vec![2]), "2 is still held");
        assert_eq!(held.to_square("mail"), None, "another notifier's claims");
        held.squared("slack");
        assert_eq!(held.to_square("slack"), None);

        held.ended(Ok((ids[2], false)));
        assert_eq!(held.to_square("mail"), Some(vec![]));
    }
}
