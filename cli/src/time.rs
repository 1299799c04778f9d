//! Times as the store keeps them and as operators write them: the same
//! parsing and formatting as the dashboard's filters.

pub use duroxide_pg_ui::time::{format_ms, now_ms, parse_age, parse_moment};
