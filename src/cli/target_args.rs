//! The recovery-target flags `restore` and `drill` share.

use clap::{ArgGroup, Args};

use pitr::error::{Error, Result};
use pitr::restore::target::{parse_time, parse_timeline};
use pitr::restore::{PlanRequest, Target, TargetAction};
use pitr::wal::Lsn;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").multiple(false).args(
    ["target_time", "target_lsn", "target_xid", "target_name", "target_immediate"])))]
pub struct TargetArgs {
    /// Recover to this time: RFC 3339 or PostgreSQL's form; no zone means UTC
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover to this LSN (e.g. 0/16B3748)
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover to the commit of this transaction id
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long)]
    pub target_immediate: bool,

    /// Timeline to recover along: latest, current or a number
    #[arg(long, default_value = "latest")]
    pub target_timeline: String,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,
    /// Use this backup (id or name) instead of the newest that fits
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,
}

impl TargetArgs {
    pub fn target(&self) -> Result<Target> {
        Ok(if let Some(t) = &self.target_time {
            let (time, zone_given) = parse_time(t)?;
            Target::Time { time, zone_given }
        } else if let Some(l) = &self.target_lsn {
            Target::Lsn {
                lsn: l
                    .parse::<Lsn>()
                    .map_err(|e| Error::Config(format!("--target-lsn: {e}")))?,
            }
        } else if let Some(x) = self.target_xid {
            Target::Xid { xid: x }
        } else if let Some(n) = &self.target_name {
            Target::Name { name: n.clone() }
        } else if self.target_immediate {
            Target::Immediate
        } else {
            Target::Latest
        })
    }

    /// The plan request these flags make, promoting at the target.
    pub fn request(&self) -> Result<PlanRequest> {
        Ok(PlanRequest {
            target: self.target()?,
            timeline: parse_timeline(&self.target_timeline)?,
            exclusive: self.exclusive,
            action: TargetAction::Promote,
            backup: self.backup_id.clone(),
        })
    }
}
