//! Shared helpers for Capstan's benchmarks: timing statistics and result files.
