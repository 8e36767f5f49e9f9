//! Point-in-time recovery: the planner (a target to a backup and a proven
//! WAL chain) and the executor (tars to PGDATA, recovery settings).

pub mod archive_index;
pub mod execute;
pub mod extract;
pub mod plan;
pub mod target;

pub use plan::{plan, Plan, PlanRequest};
pub use target::{Target, TargetAction, TimelineTarget};
