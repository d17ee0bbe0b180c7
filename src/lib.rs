//! Guest Care IVR: a Twilio voice webhook server that routes callers through declarative
//! flows (`ivr_flows/`) and records every call, step, ticket and notification.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod call_url;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod flow;
pub mod hours;
pub mod http_server;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod records;
pub mod retention;
pub mod signature;
pub mod sla;
pub mod state;
pub mod storage;
pub mod twiml;
pub mod voice;
