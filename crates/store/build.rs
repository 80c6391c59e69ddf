//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files of
//! `migrations/`, but stable Rust cannot track a new file in that directory by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
