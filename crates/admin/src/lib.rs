//! admin (to be written).
