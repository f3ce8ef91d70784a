//! The WhatsApp Cloud API (Meta's Graph API) as a gateway (README "WhatsApp Cloud API"): the
//! send call, the error-code table of SPEC §13, what goes over the wire, and the sandbox.

pub mod client;
pub mod codes;
pub mod payload;
pub mod sandbox;
pub mod statuses;

pub use client::CloudApi;
