//! The delivery policy (README "Delivery policy"): cluster-wide rules that keep a real WhatsApp
//! number safe. A job held back by the policy is snoozed (`queue::snooze`): no attempt spent, no
//! slot held.

pub mod expiry;
pub mod window;
