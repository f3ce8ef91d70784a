//! The WhatsApp Cloud API (Meta's Graph API) as a gateway (README "WhatsApp Cloud API"): the
//! send call and the error-code table of SPEC §13.

pub mod client;
pub mod codes;

pub use client::CloudApi;
