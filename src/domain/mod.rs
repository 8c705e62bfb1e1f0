//! Domain types: values that are valid by construction, converted from DTOs at the API edge.
//! They depend on nothing else in the crate.

pub mod flash_sale;
pub mod money;
pub mod order;
pub mod product;
pub mod user;
