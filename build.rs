//! `sqlx::migrate!` embeds the migrations at compile time: without this, a migration
//! added to `migrations/` would not be in the next build (cargo does not watch the folder).
#![forbid(unsafe_code)]
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
