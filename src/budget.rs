//! The node-wide budget of request body bytes in flight
//! (`limits.max_inflight_body`): a body is reserved from its
//! `Content-Length` when its head arrives, before any of it is buffered,
//! and released when the [`Reservation`] is dropped — once the request was
//! handled, or with its connection or its refused job. Every path that
//! ends a body ends its reservation, as it is a value owned alongside it.
//!
//! A body whose head showed no valid `Login-Token` (login, register, the
//! operator's routes) is anonymous: anonymous bodies together may hold at
//! most a quarter of the budget (at least `limits.max_body`), so clients
//! that need no account cannot take the room of signed-in uploads.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Body bytes reserved now (all, and anonymous), against maximums.
pub struct BodyBudget {
    used: Arc<AtomicUsize>,
    max: usize,
    anonymous: Arc<AtomicUsize>,
    anonymous_max: usize,
}

/// Bytes of one body, given back to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicUsize>,
    anonymous: Option<Arc<AtomicUsize>>,
    bytes: usize,
}

/// Adds `bytes` to `counter` unless that would pass `max`.
fn take(counter: &AtomicUsize, bytes: usize, max: usize) -> bool {
    counter
        .fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(bytes).filter(|&total| total <= max)
        })
        .is_ok()
}

impl BodyBudget {
    /// A budget of `max` bytes, of which anonymous bodies may hold a
    /// quarter, and at least `max_body`.
    pub fn new(max: usize, max_body: usize) -> BodyBudget {
        BodyBudget {
            used: Arc::new(AtomicUsize::new(0)),
            max,
            anonymous: Arc::new(AtomicUsize::new(0)),
            anonymous_max: (max / 4).max(max_body),
        }
    }

    /// Reserves `bytes` (of an anonymous body: see the module comment);
    /// `None` when they do not fit.
    pub fn reserve(&self, bytes: usize, anonymous: bool) -> Option<Reservation> {
        if anonymous && !take(&self.anonymous, bytes, self.anonymous_max) {
            return None;
        }
        if !take(&self.used, bytes, self.max) {
            if anonymous {
                self.anonymous.fetch_sub(bytes, Relaxed);
            }
            return None;
        }
        Some(Reservation {
            used: Arc::clone(&self.used),
            anonymous: anonymous.then(|| Arc::clone(&self.anonymous)),
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
        if let Some(anonymous) = &self.anonymous {
            anonymous.fetch_sub(self.bytes, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_and_are_given_back() {
        let budget = BodyBudget::new(100, 10);
        let a = budget.reserve(60, false).unwrap();
        assert!(budget.reserve(41, false).is_none());
        let b = budget.reserve(40, false).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(budget.reserve(usize::MAX, false).is_none());
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn anonymous_bodies_hold_a_quarter_at_most() {
        let budget = BodyBudget::new(100, 10);
        let a = budget.reserve(20, true).unwrap();
        assert!(budget.reserve(6, true).is_none(), "past the quarter");
        let signed_in = budget.reserve(80, false).unwrap();
        assert!(budget.reserve(5, true).is_none(), "past the whole");
        drop(signed_in);
        let b = budget.reserve(5, true).unwrap();
        drop((a, b));
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(25, true).is_some());
        // The quarter is at least one `max_body`.
        let small = BodyBudget::new(100, 40);
        assert!(small.reserve(40, true).is_some());
    }
}
