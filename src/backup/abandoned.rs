//! Backups whose process was killed: left STARTED, with multipart uploads
//! open. The next backup marks them FAILED and drops those uploads.

use chrono::Utc;
use tracing::warn;

use super::catalog;
use super::info::BackupStatus;
use crate::error::Result;
use crate::repo::Repo;

/// A STARTED backup older than this was abandoned (its process was killed).
pub(crate) const ABANDONED_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// Marks backups left STARTED long ago as FAILED and drops the uploads
/// they left open, so a killed backup does not hold storage forever.
pub(super) async fn close_abandoned(repo: &Repo) -> Result<()> {
    let now = Utc::now();
    for mut entry in catalog::list(repo).await? {
        let info = &mut entry.info;
        let stale = info.status == BackupStatus::Started
            && info
                .begin_time
                .is_some_and(|t| now.signed_duration_since(t) > ABANDONED_AFTER);
        if !stale {
            continue;
        }
        let dropped = repo
            .store
            .abort_unfinished(&repo.layout.backup_prefix(&info.backup_id))
            .await?;
        info.status = BackupStatus::Failed;
        info.error = Some(format!(
            "abandoned: still STARTED at {} (the process taking it was killed); {dropped} unfinished uploads dropped",
            now.to_rfc3339()
        ));
        catalog::write_info(repo, info, false).await?;
        warn!(
            "backup {} was abandoned while STARTED: marked FAILED",
            info.backup_id
        );
    }
    Ok(())
}
