//! Admin HTTP API (axum).
