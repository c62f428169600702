//! Network-namespace lab: real kernel NATs, `miniupnpd`, `coturn`.
//!
//! Lab tests run only when [`ENABLE_ENV`] is set to `1` (as root, with the
//! packages `.ci/run` installs). Without it they are `#[ignore]`d with the
//! reason [`IGNORE_REASON`].
//!
//! Not built yet (the NAT traversal work fills it in).

/// The environment variable that enables the lab tests.
pub const ENABLE_ENV: &str = "CRUST_LAB";

/// Why lab tests are ignored by default.
pub const IGNORE_REASON: &str = "network lab: needs root and CRUST_LAB=1 (see .ci/run)";

/// Whether lab tests are enabled in this process (`CRUST_LAB=1`).
pub fn enabled() -> bool {
    std::env::var(ENABLE_ENV).as_deref() == Ok("1")
}
