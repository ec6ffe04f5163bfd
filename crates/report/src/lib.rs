//! Scaling reports (to be written).
