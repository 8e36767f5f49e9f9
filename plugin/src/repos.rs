//! Warm repositories: one opened [`Repo`] per distinct settings and use,
//! kept between calls (the store client, its connections and the identity
//! record stay warm), at most [`MAX_OPEN`] of them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pitr::config::DEFAULT_REQUEST_ATTEMPTS;
use pitr::error::Result;
use pitr::repo::Repo;

use crate::settings::{RepoSettings, SidecarEnv};

/// How many opened repositories are kept; the least recently used goes.
pub const MAX_OPEN: usize = 8;

/// Writers create a missing local directory; readers never do (a wrong
/// path is an error, not an empty archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// WAL pushes: the store client's own retries.
    Write,
    /// WAL restores: `restore_wal` retries whole fetches, so one store
    /// attempt each.
    Read,
    /// Whole backups for the recovery Job: the store client's own retries.
    Restore,
}

pub struct Repos {
    env: SidecarEnv,
    open: Mutex<VecDeque<(RepoSettings, Access, Arc<Repo>)>>,
}

impl Repos {
    pub fn new(env: SidecarEnv) -> Repos {
        Repos {
            env,
            open: Mutex::new(VecDeque::new()),
        }
    }

    pub fn env(&self) -> &SidecarEnv {
        &self.env
    }

    /// The secret strings that must never reach a message.
    pub fn secrets(&self, settings: &RepoSettings) -> Vec<String> {
        settings
            .to_config(self.env.credentials.clone(), 1)
            .secrets()
    }

    /// The opened repository for `settings`, opening it on first use.
    pub fn get(&self, settings: &RepoSettings, access: Access) -> Result<Arc<Repo>> {
        let mut open = self.open.lock().expect("repository cache lock");
        if let Some(i) = open
            .iter()
            .position(|(s, a, _)| *a == access && s == settings)
        {
            let entry = open.remove(i).expect("index is in range");
            let repo = entry.2.clone();
            open.push_back(entry);
            return Ok(repo);
        }
        let (attempts, create) = match access {
            Access::Write => (DEFAULT_REQUEST_ATTEMPTS, true),
            Access::Read => (1, false),
            Access::Restore => (DEFAULT_REQUEST_ATTEMPTS, false),
        };
        let cfg = settings.to_config(self.env.credentials.clone(), attempts);
        let repo = Arc::new(if create {
            Repo::create(&cfg)?
        } else {
            Repo::open(&cfg)?
        });
        if open.len() >= MAX_OPEN {
            open.pop_front();
        }
        open.push_back((settings.clone(), access, repo.clone()));
        Ok(repo)
    }

    /// How many repositories are open (for tests).
    pub fn len(&self) -> usize {
        self.open.lock().expect("repository cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{resolve, Params};
    use serde_json::json;

    fn settings(dir: &std::path::Path, server: &str) -> RepoSettings {
        let params = Params::from_json(
            Some(&json!({"repository": format!("file://{}", dir.display()), "serverName": server})),
            "test",
        )
        .unwrap();
        resolve(&params, "unused", &SidecarEnv::default())
            .unwrap()
            .repo
    }

    #[tokio::test]
    async fn repositories_stay_warm_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::new(SidecarEnv::default());
        let a = settings(dir.path(), "a");
        let first = repos.get(&a, Access::Write).unwrap();
        assert!(Arc::ptr_eq(&first, &repos.get(&a, Access::Write).unwrap()));
        // Readers get their own (one store attempt each, no directory creation).
        assert!(!Arc::ptr_eq(&first, &repos.get(&a, Access::Read).unwrap()));
        assert_eq!(repos.len(), 2);
        for i in 0..(MAX_OPEN + 3) {
            repos
                .get(&settings(dir.path(), &format!("s{i}")), Access::Write)
                .unwrap();
        }
        assert_eq!(repos.len(), MAX_OPEN);
        // The oldest went: asking again opens a new one.
        assert!(!Arc::ptr_eq(&first, &repos.get(&a, Access::Write).unwrap()));
        // A reader never creates a missing directory.
        let missing = settings(&dir.path().join("nope"), "a");
        assert!(repos.get(&missing, Access::Read).is_err());
        assert!(!dir.path().join("nope").exists());
    }
}
