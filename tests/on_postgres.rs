//! The storage and HTTP suites again, on PostgreSQL: the same test files, each test on a
//! database of its own made on the server `IVR_TEST_POSTGRES_URL` names (see
//! `common/database.rs`). The suites left out test SQLite itself (its files, its disk,
//! its crash recovery) or no storage at all.

// Each suite brings its own `mod common;`, so the harness is compiled once per suite here:
// that is how an included suite finds it runs on PostgreSQL (`common::database`).
#![allow(clippy::duplicate_mod)]

#[path = "api.rs"]
mod api;
#[path = "console.rs"]
mod console;
#[path = "console_tickets.rs"]
mod console_tickets;
#[path = "email.rs"]
mod email;
#[path = "guest_care_line.rs"]
mod guest_care_line;
#[path = "menu_behaviour.rs"]
mod menu_behaviour;
#[path = "retention.rs"]
mod retention;
#[path = "shopping_dollars.rs"]
mod shopping_dollars;
#[path = "soft_transfers.rs"]
mod soft_transfers;
#[path = "store_line.rs"]
mod store_line;
#[path = "tickets.rs"]
mod tickets;
#[path = "webhooks.rs"]
mod webhooks;
