//! Invite tokens as the redirect needs them, kept in memory. A token row
//! never changes once written (its id, order and expiry are fixed; only
//! `consumed_at` moves, which the redirect does not read) and is never
//! deleted, so a copy cannot go stale: the redirect answers from here
//! without handing a lookup to another thread and back. Filled when a
//! webhook's commit creates a token and on the first lookup of any other;
//! a token not found is not remembered (it may be committed a moment later,
//! or by another instance on a shared database). Bounded: past `CAPACITY`
//! the oldest entries go first, and a token that is not here is read from
//! the database as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use uuid::Uuid;

/// About 100 bytes each: a few MiB at most, and more than the tokens a
/// shop makes in a token's lifetime at the rates it is sold for.
pub const CAPACITY: usize = 32_768;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedToken {
    pub token_id: Box<str>,
    pub order_id: Box<str>,
    pub expires_at: i64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Uuid, CachedToken>,
    /// Insertion order, for eviction.
    order: VecDeque<Uuid>,
}

pub struct TokenCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_capacity(CAPACITY)
    }
}

impl TokenCache {
    pub fn with_capacity(capacity: usize) -> TokenCache {
        TokenCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, token: &Uuid) -> Option<CachedToken> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(token).cloned()
    }

    /// Remembers a token read from, or just committed to, the database.
    pub fn insert(&self, token: Uuid, entry: CachedToken) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map.insert(token, entry).is_some() {
            return;
        }
        inner.order.push_back(token);
        while inner.map.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> CachedToken {
        CachedToken {
            token_id: format!("t{n}").into(),
            order_id: format!("ORD-{n}").into(),
            expires_at: n,
        }
    }

    #[test]
    fn a_token_is_found_as_inserted() {
        let cache = TokenCache::default();
        let t = Uuid::new_v4();
        assert_eq!(cache.get(&t), None);
        cache.insert(t, entry(1));
        assert_eq!(cache.get(&t), Some(entry(1)));
    }

    #[test]
    fn the_oldest_tokens_go_first_past_the_bound() {
        let cache = TokenCache::with_capacity(3);
        let tokens: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for (i, t) in tokens.iter().enumerate() {
            cache.insert(*t, entry(i as i64));
            // Inserting one already held neither grows nor reorders it.
            cache.insert(*t, entry(i as i64));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&tokens[0]), None);
        assert_eq!(cache.get(&tokens[1]), None);
        for (i, t) in tokens.iter().enumerate().skip(2) {
            assert_eq!(cache.get(t), Some(entry(i as i64)));
        }
    }
}
