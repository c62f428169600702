//! uTP (BEP 29): a sans-IO protocol core, an endpoint machine that
//! multiplexes connections over one UDP socket, and its tokio driver.
//!
//! Not built yet.
