//! A full disk is not "not in the archive": `wal-fetch` into a small
//! tmpfs that cannot hold the segment exits above 125 (so PostgreSQL
//! stops recovery instead of promoting) and leaves no file, not even a
//! temporary one; `restore` into a PGDATA on a full file system fails
//! with an error that says so and leaves the directory empty. Against the
//! real Ceph RGW over HTTPS. Needs root to mount the tmpfs (as CI runs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::pg::Pg;
use common::s3::Rgw;
use common::{fresh_segment, pitr, run, running_as_root, TestDir};

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, mib: u32) -> Option<SmallFs> {
        std::fs::create_dir_all(&dir).unwrap();
        let r = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m")])
            .arg("tmpfs")
            .arg(&dir));
        match r.code {
            0 => Some(SmallFs(dir)),
            _ => {
                eprintln!(
                    "cannot mount a tmpfs here ({}): test not run",
                    r.stderr.trim()
                );
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Backs up a new primary (server name `db`: not the cluster the test's
/// segment came from) and restores it into `pgdata`.
fn restore_a_new_backup(rgw: &Rgw, bucket: &str, dir: &TestDir, pgdata: &Path) -> common::Run {
    let env = rgw.pitr_env(bucket, "db");
    let mut pg = Pg::archiving(dir.join("primary"), &env);
    let b = run(pitr()
        .envs(env.iter().cloned())
        .args(["backup", "-d", &pg.conninfo()]));
    assert_eq!(b.code, 0, "{b:?}");
    pg.stop();
    run(pitr()
        .envs(env.iter().cloned())
        .args(["restore", "--pgdata"])
        .arg(pgdata))
}

#[test]
fn a_full_disk_is_a_failure_never_not_found_and_leaves_nothing() {
    assert!(
        running_as_root(),
        "run the tests as root (tests/run.sh under .ci/run)"
    );
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("diskfull");
    let dir = TestDir::new("diskfull");
    let env = rgw.pitr_env(&bucket, "main");
    let Some(fs) = SmallFs::mount(dir.join("small"), 4) else {
        return;
    };

    // wal-fetch of a 16 MiB segment into 4 MiB.
    let seg = fresh_segment(&dir, "a");
    let r = run(pitr().envs(env.iter().cloned()).arg("wal-push").arg(&seg));
    assert_eq!(r.code, 0, "{r:?}");
    let pg_wal = fs.0.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let fetch = |extra: &[&str]| {
        run(pitr()
            .envs(env.iter().cloned())
            .args(["wal-fetch", "--retries", "1", "--prefetch", "0"])
            .args(extra)
            .arg("000000010000000000000001")
            .arg(&dest))
    };
    let r = fetch(&[]);
    assert_eq!(r.code, 255, "a full disk must stop recovery: {r:?}");
    assert!(
        r.stderr.to_lowercase().contains("no space left"),
        "says why: {}",
        r.stderr
    );
    assert_eq!(
        entries(&pg_wal),
        Vec::<String>::new(),
        "nothing left in pg_wal"
    );
    // In standby mode the same failure falls back to streaming (1).
    let r = fetch(&["--standby"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(entries(&pg_wal), Vec::<String>::new());

    // restore into a PGDATA on a full file system.
    let pgdata = fs.0.join("pgdata");
    let r = restore_a_new_backup(&rgw, &bucket, &dir, &pgdata);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.to_lowercase().contains("no space left"),
        "says why: {}",
        r.stderr
    );
    assert_eq!(
        entries(&pgdata),
        Vec::<String>::new(),
        "the restore removed what it wrote"
    );
}

#[test]
fn a_read_only_file_system_or_an_unreadable_segment_fails_clearly_and_stores_nothing() {
    assert!(
        running_as_root(),
        "run the tests as root (tests/run.sh under .ci/run)"
    );
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("readonly");
    let dir = TestDir::new("readonly");
    let env = rgw.pitr_env(&bucket, "main");
    let Some(fs) = SmallFs::mount(dir.join("ro"), 64) else {
        return;
    };
    let seg = fresh_segment(&dir, "a");

    // wal-push of a segment its user cannot read: non-zero, nothing stored.
    let unreadable = dir.join("unreadable");
    std::fs::create_dir_all(&unreadable).unwrap();
    let hidden = unreadable.join("000000010000000000000001");
    std::fs::copy(&seg, &hidden).unwrap();
    common::chown_postgres(&unreadable);
    std::fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let r = run(common::as_postgres(common::pitr_bin())
        .env_remove("PITR_REPO")
        .envs(env.iter().cloned())
        .arg("wal-push")
        .arg(&hidden));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("cannot open") && r.stderr.contains("ermission denied"),
        "names the file and the cause: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&hidden.display().to_string()),
        "{}",
        r.stderr
    );
    assert_eq!(rgw.keys(&bucket, "pg/main/wals/"), Vec::<String>::new());

    // wal-fetch and restore onto a read-only file system.
    let r = run(pitr().envs(env.iter().cloned()).arg("wal-push").arg(&seg));
    assert_eq!(r.code, 0, "{r:?}");
    let pg_wal = fs.0.join("pg_wal");
    let pgdata = fs.0.join("pgdata");
    std::fs::create_dir_all(&pg_wal).unwrap();
    std::fs::create_dir_all(&pgdata).unwrap();
    let r = run(Command::new("mount").args(["-o", "remount,ro"]).arg(&fs.0));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(pitr()
        .envs(env.iter().cloned())
        .args(["wal-fetch", "--retries", "1", "--prefetch", "0"])
        .arg("000000010000000000000001")
        .arg(pg_wal.join("RECOVERYXLOG")));
    assert_eq!(r.code, 255, "a read-only pg_wal must stop recovery: {r:?}");
    assert!(
        r.stderr.to_lowercase().contains("read-only file system"),
        "says why: {}",
        r.stderr
    );
    assert_eq!(entries(&pg_wal), Vec::<String>::new());

    let r = restore_a_new_backup(&rgw, &bucket, &dir, &pgdata);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.to_lowercase().contains("read-only file system")
            && r.stderr.contains(&pgdata.display().to_string()),
        "names the directory and the cause: {}",
        r.stderr
    );
    assert_eq!(entries(&pgdata), Vec::<String>::new());
}
