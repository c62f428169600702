//! A seeded, deterministic simulated network with a virtual clock.
//!
//! Not built yet (the uTP work fills it in).
