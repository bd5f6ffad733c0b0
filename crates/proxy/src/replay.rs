//! Journal replay (being written).
