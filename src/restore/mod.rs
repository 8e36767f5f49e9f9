//! Point-in-time recovery: the planner (a target to a backup and a proven
//! WAL chain) and the executor (tars to PGDATA, recovery settings).

pub mod archive_index;
mod chain;
pub mod execute;
pub mod extract;
pub mod incomplete;
pub mod plan;
mod stop_point;
pub mod target;

pub use plan::{plan, Plan, PlanRequest};
pub use target::{Target, TargetAction, TimelineTarget};
