//! The WhatsApp Cloud API gateway (SPEC §13).

pub mod payload;
pub mod sandbox;
