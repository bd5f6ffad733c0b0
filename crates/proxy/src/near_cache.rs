//! Near-cache (being written).
