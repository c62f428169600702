//! Shared helpers for the benchmarks: output lines and measurement windows.
