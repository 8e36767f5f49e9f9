//! Finding a WAL file in the archive whatever compression it was stored
//! with (Barman may have written `.gz`, `.bz2`, ... or nothing).

use crate::error::Result;
use crate::repo::Repo;
use crate::store::{Object, ObjectInfo};
use crate::wal::WalFileName;

/// Every stored object for `name` (normally one), by key.
pub async fn stored_copies(repo: &Repo, name: &WalFileName) -> Result<Vec<ObjectInfo>> {
    let prefix = repo.layout.wal_key(name, "");
    let listed = repo.store.list(&prefix).await?;
    Ok(listed
        .into_iter()
        .filter(|o| repo.layout.wal_suffix_of(name, &o.key).is_some())
        .collect())
}

/// Opens the stored object for `name`: first under the suffix this
/// repository writes (one request), else whatever a listing finds.
pub async fn open(repo: &Repo, name: &WalFileName) -> Result<Option<Object>> {
    let preferred = repo.layout.wal_key(name, repo.codec.compression.suffix());
    if let Some(obj) = repo.store.get(&preferred).await? {
        return Ok(Some(obj));
    }
    for info in stored_copies(repo, name).await? {
        if let Some(obj) = repo.store.get(&info.key).await? {
            return Ok(Some(obj));
        }
    }
    Ok(None)
}
