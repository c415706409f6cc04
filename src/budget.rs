//! The node-wide budget of request body bytes in flight
//! (`limits.max_inflight_body`): a body is reserved from its
//! `Content-Length` when its head arrives, before any of it is buffered,
//! and released when the [`Reservation`] is dropped — once the request was
//! handled, or with its connection or its refused job. Every path that
//! ends a body ends its reservation, as it is a value owned alongside it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Body bytes reserved now, against a maximum.
pub struct BodyBudget {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// Bytes of one body, given back to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> BodyBudget {
        BodyBudget {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves `bytes`; `None` when they do not fit.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .ok()?;
        Some(Reservation {
            used: Arc::clone(&self.used),
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.used.load(Relaxed)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_and_are_given_back() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none());
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(budget.reserve(usize::MAX).is_none());
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
