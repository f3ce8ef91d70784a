//! bengkel-whatsapp: every WhatsApp send is a persisted apalis job in PostgreSQL.

pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod customers;
pub mod db;
pub mod error;
pub mod gateway;
pub mod http;
pub mod inbound;
pub mod maintenance;
pub mod manual;
pub mod messages;
pub mod ops;
pub mod policy;
pub mod queue;
pub mod reminders;
pub mod segments;
pub mod state;
pub mod suppressions;
pub mod telemetry;
pub mod templates;
pub mod webhooks;
pub mod worker;
