//! Moved: the expiry sweep is `maintenance::expiry` (the periodic services live together). This
//! file stays empty until `policy/mod.rs` drops its `pub mod expiry;`.
