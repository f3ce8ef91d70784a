//! Integration tests: a real PostgreSQL (a fresh database per test), the real HTTP server and
//! workers, and a fake StarSender gateway over HTTP (wiremock) that can be told to fail.

mod helpers;

mod admin_alerts;
mod admin_summary;
mod auth;
mod batch;
mod campaigns;
mod cloud_api;
mod cloud_drill;
mod cloud_rules;
mod cloud_sandbox;
mod cloud_templates;
mod console;
mod customers;
mod deadlines;
mod durability;
mod embedded;
mod faults;
mod graph_fake;
mod hostile;
mod inbound;
mod manual;
mod ops;
mod owners;
mod policy;
mod queue;
mod receipts;
mod reminders;
mod retries;
mod segments;
mod sending;
mod suppressions;
mod templates;
mod templates_length;
mod templates_preview;
mod templates_send;
mod templates_send_checks;
mod throttle;
mod throttle_classes;
mod validation;
mod webhooks;
