//! The payment state machine, as a pure function: a payment's status only moves forward.
//!
//! Every status has a rank and merging two statuses keeps the higher one. Merging is
//! commutative, associative and idempotent, so the events of one payment can arrive in any
//! order, any number of times, and the payment ends in the same state (the property tests
//! below check it over permutations of real lifecycles).
//!
//! ```text
//! pending < submitted < failed < expired < cancelled < completed < paid_out < refunded < charged_back
//! ```
//!
//! Why this order:
//! - `pending`, `submitted`: on the way; every outcome beats them (a late `payments.created`
//!   never undoes a `confirmed`).
//! - `failed`, `expired`, `cancelled`: ends of an attempt that took no money. They rank below
//!   `completed` because a failed collection can be retried (GoCardless retries, a PayQI
//!   customer pays at the second try) and then completes; a late `failed` of the first
//!   attempt must not undo that. A retried payment keeps showing `failed` until its retry
//!   completes or fails (a resubmission's `submitted` ranks below `failed`). Between the three,
//!   the order is only there to make merging deterministic; one payment rarely gets two.
//! - `completed` < `paid_out`: money taken, then paid out to us.
//! - `refunded`, `charged_back`: money given back after completion. The ledger, not the status,
//!   carries how much (partial refunds are separate rows); a chargeback is the last word.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentStatus {
    Pending,
    Submitted,
    Failed,
    Expired,
    Cancelled,
    Completed,
    PaidOut,
    Refunded,
    ChargedBack,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 9] = [
        Self::Pending,
        Self::Submitted,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
        Self::Completed,
        Self::PaidOut,
        Self::Refunded,
        Self::ChargedBack,
    ];

    /// The `payments.status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::PaidOut => "paid_out",
            Self::Refunded => "refunded",
            Self::ChargedBack => "charged_back",
        }
    }

    /// The status after an event reporting `incoming` is applied to a payment in `self`:
    /// the higher of the two (declaration order above is the rank).
    pub fn merge(self, incoming: PaymentStatus) -> PaymentStatus {
        self.max(incoming)
    }

    /// True for statuses that mean money was taken (at some point).
    pub fn money_taken(self) -> bool {
        self >= Self::Completed
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown payment status {s:?}"))
    }
}

/// A member's status over time: the event with the latest timestamp decides; at equal
/// timestamps `suspended` wins. Like [`PaymentStatus::merge`], order-independent.
pub fn member_status_wins(
    current: (&str, Option<chrono::DateTime<chrono::Utc>>),
    incoming: (&str, chrono::DateTime<chrono::Utc>),
) -> bool {
    let rank = |s: &str| u8::from(s == "suspended");
    match current.1 {
        None => true,
        Some(at) => (incoming.1, rank(incoming.0)) > (at, rank(current.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;
    use PaymentStatus::*;

    #[test]
    fn a_late_older_event_never_undoes_a_newer_state() {
        assert_eq!(Completed.merge(Pending), Completed);
        assert_eq!(Completed.merge(Submitted), Completed);
        assert_eq!(PaidOut.merge(Completed), PaidOut);
        assert_eq!(Completed.merge(Failed), Completed);
        assert_eq!(Failed.merge(Completed), Completed);
        assert_eq!(Refunded.merge(PaidOut), Refunded);
        assert_eq!(Submitted.merge(Submitted), Submitted);
    }

    #[test]
    fn statuses_parse_back_from_their_column_value() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(s));
        }
        assert!("paid".parse::<PaymentStatus>().is_err());
    }

    /// Lifecycles the gateways really report, each with duplicates allowed.
    fn lifecycle() -> impl Strategy<Value = Vec<PaymentStatus>> {
        prop::sample::select(vec![
            vec![Pending, Submitted, Completed, PaidOut],
            vec![Pending, Submitted, Completed, PaidOut, ChargedBack],
            vec![Pending, Submitted, Failed],
            vec![Pending, Submitted, Failed, Submitted, Completed],
            vec![Pending, Cancelled],
            vec![Pending, Completed, Refunded, Refunded],
            vec![Pending, Pending, Expired],
            vec![Pending, Failed, Pending, Completed],
        ])
    }

    fn status() -> impl Strategy<Value = PaymentStatus> {
        prop::sample::select(PaymentStatus::ALL.to_vec())
    }

    fn fold(events: &[PaymentStatus]) -> Option<PaymentStatus> {
        events.iter().copied().reduce(PaymentStatus::merge)
    }

    proptest! {
        #[test]
        fn any_permutation_of_a_lifecycle_ends_in_the_same_state(
            (events, shuffled) in lifecycle().prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle()))
        ) {
            prop_assert_eq!(fold(&shuffled), fold(&events));
        }

        #[test]
        fn delivering_events_again_changes_nothing(
            events in lifecycle(), dup in 0usize..5
        ) {
            let mut again = events.clone();
            again.push(events[dup % events.len()]);
            prop_assert_eq!(fold(&again), fold(&events));
        }

        #[test]
        fn merge_never_moves_backwards(a in 0usize..9, b in 0usize..9) {
            let (a, b) = (PaymentStatus::ALL[a], PaymentStatus::ALL[b]);
            prop_assert!(a.merge(b) >= a);
            prop_assert_eq!(a.merge(b), b.merge(a));
        }

        /// Not only real lifecycles: any events at all (duplicates, impossible mixes), in any
        /// order, end in the same status, the highest ranked among them.
        #[test]
        fn any_events_in_any_order_end_in_the_same_highest_status(
            (events, shuffled) in prop::collection::vec(status(), 1..24)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            prop_assert_eq!(fold(&shuffled), fold(&events));
            prop_assert_eq!(fold(&events), events.iter().copied().max());
        }

        /// As the worker applies them (`payments::apply`: the first event inserts the row with
        /// its status, each later one merges into it): every step stays or moves forward, and
        /// once money is taken no later event says otherwise.
        #[test]
        fn applying_events_one_at_a_time_only_moves_forward(
            events in prop::collection::vec(status(), 1..24)
        ) {
            let mut current = events[0];
            for &incoming in &events[1..] {
                let next = current.merge(incoming);
                prop_assert!(next >= current && next >= incoming);
                prop_assert!(next == current || next == incoming);
                prop_assert!(!current.money_taken() || next.money_taken());
                current = next;
            }
        }

        /// Grouping does not matter either (replays and retries interleave arbitrarily), and
        /// an event applied twice is applied once.
        #[test]
        fn merge_is_associative_and_idempotent(a in status(), b in status(), c in status()) {
            prop_assert_eq!(a.merge(b).merge(c), a.merge(b.merge(c)));
            prop_assert_eq!(a.merge(b).merge(b), a.merge(b));
        }

        #[test]
        fn member_status_is_order_independent(
            mut events in prop::collection::vec((any::<bool>(), 0i64..5), 1..8)
        ) {
            let apply = |events: &[(bool, i64)]| {
                let mut cur: (&str, Option<DateTime<Utc>>) = ("active", None);
                for (suspend, t) in events {
                    let s = if *suspend { "suspended" } else { "active" };
                    let at = Utc.timestamp_opt(*t, 0).unwrap();
                    if member_status_wins(cur, (s, at)) {
                        cur = (s, Some(at));
                    }
                }
                cur
            };
            let a = apply(&events);
            events.reverse();
            prop_assert_eq!(apply(&events), a);
        }
    }
}
