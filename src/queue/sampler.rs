//! Moved: the queue sampler is `maintenance::sampler` (the periodic services live together).
//! This file stays empty until `queue/mod.rs` drops its `pub mod sampler;`.
