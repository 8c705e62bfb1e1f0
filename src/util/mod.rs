//! Small, domain-free building blocks the layers share.

pub mod single_flight;
