//! The tokio face of uTP (in progress).
