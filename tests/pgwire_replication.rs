//! The replication-protocol client against real PostgreSQL (15 by default):
//! authentication methods, IDENTIFY_SYSTEM, SHOW, and BASE_BACKUP streamed
//! as events, including a tablespace, a checksum failure at the end, and a
//! server that goes away mid-stream. Each test has its own cluster.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pg::{tool, Pg};
use common::{chown_postgres, run_ok, TestDir};
use pitr::config::Secret;
use pitr::pgwire::{
    BackupEvent, BaseBackupOptions, Checkpoint, ConnectParams, Host, ReplicationConnection,
    TablespaceInfo,
};
use pitr::wal::Lsn;
use sha2::{Digest, Sha256};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Settings for the cluster's Unix socket, resolved from a connection
/// string the way `--dbname` is (the process environment is not read).
fn unix_params(pg: &Pg, user: &str) -> ConnectParams {
    ConnectParams::resolve_with(
        Some(&format!(
            "host={} port={} user={user} application_name=pitr-test",
            pg.sock.display(),
            pg.port
        )),
        |_| None,
    )
    .unwrap()
}

fn tcp_params(pg: &Pg, user: &str, password: Option<&str>) -> ConnectParams {
    ConnectParams {
        host: Host::Tcp("127.0.0.1".into()),
        port: pg.port,
        user: user.into(),
        password: password.map(Secret::new),
        dbname: None,
        application_name: "pitr-test".into(),
        connect_timeout: Duration::from_secs(30),
    }
}

fn started(tag: &str) -> (TestDir, Pg) {
    init_tracing();
    let dir = TestDir::new(tag);
    let mut pg = Pg::init(dir.join("data"));
    pg.start(&[]);
    (dir, pg)
}

#[tokio::test]
async fn trust_over_unix_socket_identify_system_and_show() {
    let (_dir, pg) = started("pgw-ident");
    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();

    assert_eq!(
        conn.server_version_num().to_string(),
        pg.sql("show server_version_num")
    );
    assert!(conn.describe().contains(".s.PGSQL."), "{}", conn.describe());
    // It is a walsender, and it carries our application_name.
    assert_eq!(
        pg.sql(
            "select count(*) from pg_stat_activity \
             where backend_type = 'walsender' and application_name = 'pitr-test'"
        ),
        "1"
    );

    let id = conn.identify_system().await.unwrap();
    assert_eq!(
        id.system_identifier.to_string(),
        pg.sql("select system_identifier from pg_control_system()")
    );
    let controldata = run_ok(tool("pg_controldata").arg("-D").arg(&pg.data));
    let controldata = String::from_utf8_lossy(&controldata.stdout);
    let from_controldata = controldata
        .lines()
        .find_map(|l| l.strip_prefix("Database system identifier:"))
        .unwrap()
        .trim();
    assert_eq!(id.system_identifier.to_string(), from_controldata);
    assert_eq!(id.timeline.get(), 1);
    assert_eq!(id.dbname, None);
    let current: Lsn = pg.sql("select pg_current_wal_lsn()").parse().unwrap();
    assert!(
        id.xlogpos.0 > 0 && id.xlogpos <= current,
        "{} vs {current}",
        id.xlogpos
    );

    let rows = conn.simple_query("SHOW wal_segment_size").await.unwrap();
    assert_eq!(rows, vec![vec![Some("16MB".to_string())]]);

    // A server error names the server's complaint, and the connection
    // stays usable afterwards.
    let e = conn.simple_query("SHOW no_such_setting").await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, pitr::Error::Postgres(_)), "{e:?}");
    assert!(
        text.contains("SQLSTATE 42704") && text.contains("no_such_setting"),
        "{text}"
    );
    let again = conn.identify_system().await.unwrap();
    assert_eq!(again.system_identifier, id.system_identifier);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn password_methods_over_tcp() {
    init_tracing();
    let dir = TestDir::new("pgw-auth");
    let mut pg = Pg::init(dir.join("data"));
    pg.conf("listen_addresses = '127.0.0.1'\npassword_encryption = 'md5'");
    // Only these lines: TCP connections must authenticate (initdb's trust
    // lines for 127.0.0.1 are gone); the Unix socket stays trusted for psql.
    std::fs::write(
        pg.data.join("pg_hba.conf"),
        "local all all trust\n\
         host replication md5user 127.0.0.1/32 md5\n\
         host replication scramuser 127.0.0.1/32 scram-sha-256\n\
         host replication clearuser 127.0.0.1/32 password\n\
         host replication norepl 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    pg.start(&[]);
    pg.sql("CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5 secret'");
    pg.sql(
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE scramuser LOGIN REPLICATION PASSWORD 'scr''am secret'; \
         CREATE ROLE clearuser LOGIN REPLICATION PASSWORD 'clear secret'; \
         CREATE ROLE norepl LOGIN PASSWORD 'norepl secret'",
    );
    // The methods really differ: an md5 hash makes the server use md5.
    assert_eq!(
        pg.sql("select left(rolpassword, 3) from pg_authid where rolname = 'md5user'"),
        "md5"
    );
    assert_eq!(
        pg.sql("select left(rolpassword, 14) from pg_authid where rolname = 'scramuser'"),
        "SCRAM-SHA-256$"
    );
    let sysid = pg.sql("select system_identifier from pg_control_system()");

    for (user, pw) in [
        ("md5user", "md5 secret"),
        ("scramuser", "scr'am secret"),
        ("clearuser", "clear secret"),
    ] {
        let mut conn = ReplicationConnection::connect(&tcp_params(&pg, user, Some(pw)))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}\n{}", pg.log()));
        assert_eq!(
            conn.identify_system()
                .await
                .unwrap()
                .system_identifier
                .to_string(),
            sysid
        );
        conn.close().await.unwrap();
    }

    // The URI form, as --dbname would give it, with a percent-encoded password.
    let uri = format!(
        "postgresql://scramuser:scr%27am%20secret@127.0.0.1:{}/?application_name=uri",
        pg.port
    );
    let params = ConnectParams::resolve_with(Some(&uri), |_| None).unwrap();
    let conn = ReplicationConnection::connect(&params).await.unwrap();
    conn.close().await.unwrap();

    for user in ["md5user", "scramuser", "clearuser"] {
        let e = ReplicationConnection::connect(&tcp_params(&pg, user, Some("wrong")))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{e}"
        );
        assert!(
            e.contains("SQLSTATE 28P01") && e.contains("PGPASSWORD"),
            "{e}"
        );
        assert!(
            !e.contains("wrong"),
            "the password must not be repeated: {e}"
        );

        let e = ReplicationConnection::connect(&tcp_params(&pg, user, None))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, pitr::Error::Config(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(&format!("asks user \"{user}\" for")) && e.contains("PGPASSWORD"),
            "{e}"
        );
    }

    // No pg_hba.conf line: the error says which line to add.
    let e = ReplicationConnection::connect(&tcp_params(&pg, "nobody", Some("x")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no pg_hba.conf entry for replication connection"),
        "{e}"
    );
    assert!(e.contains("host replication nobody"), "{e}");

    // Authenticated, but not allowed to start a walsender.
    let e = ReplicationConnection::connect(&tcp_params(&pg, "norepl", Some("norepl secret")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("replication role") && e.contains("REPLICATION"),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_server_and_old_version_are_clear_errors() {
    init_tracing();
    let dir = TestDir::new("pgw-fake");
    // Nothing listens there.
    let params = ConnectParams::resolve_with(
        Some(&format!("host={} port=5999 user=u", dir.path.display())),
        |_| None,
    )
    .unwrap();
    let e = ReplicationConnection::connect(&params)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(".s.PGSQL.5999") && e.contains("is the server running"),
        "{e}"
    );

    // A fake PostgreSQL 14: BASE_BACKUP must be refused before anything is
    // sent, so the next thing the server reads is our Terminate.
    let sock = dir.join(".s.PGSQL.5998");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let len = s.read_u32().await.unwrap();
        let mut startup = vec![0; len as usize - 4];
        s.read_exact(&mut startup).await.unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(b"R\0\0\0\x08\0\0\0\0");
        let ps = b"server_version\x0014.11 (Fake)\x00";
        out.push(b'S');
        out.extend_from_slice(&(ps.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(ps);
        out.extend_from_slice(b"Z\0\0\0\x05I");
        s.write_all(&out).await.unwrap();
        let mut next = Vec::new();
        s.read_to_end(&mut next).await.unwrap();
        (startup, next)
    });
    let params = ConnectParams::resolve_with(
        Some(&format!(
            "host={} port=5998 user=someone",
            dir.path.display()
        )),
        |_| None,
    )
    .unwrap();
    let mut conn = ReplicationConnection::connect(&params).await.unwrap();
    assert_eq!(conn.server_version_num(), 140011);
    let e = conn
        .base_backup(&BaseBackupOptions::new("x"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        "PostgreSQL 14.11 (Fake) is not supported for base backups yet: pitr needs 15 or newer"
    );
    conn.close().await.unwrap();
    let (startup, next) = server.await.unwrap();
    // Protocol 3.0 and a physical replication connection.
    assert_eq!(&startup[..4], &[0, 3, 0, 0]);
    let startup = String::from_utf8_lossy(&startup[4..]).into_owned();
    assert!(startup.contains("replication\0true\0"), "{startup:?}");
    assert!(startup.contains("user\0someone\0"), "{startup:?}");
    assert_eq!(next, b"X\0\0\0\x04", "only Terminate after the startup");
}

/// A member of a tar archive.
#[derive(Debug)]
struct Member {
    name: String,
    kind: u8,
    data: Vec<u8>,
}

/// Reads ustar headers (PostgreSQL writes plain ustar with names under 100
/// bytes); checks the archive ends with two zero blocks.
fn scan_tar(tar: &[u8]) -> Vec<Member> {
    assert_eq!(
        tar.len() % 512,
        0,
        "tar length {} is not a multiple of 512",
        tar.len()
    );
    let mut members = Vec::new();
    let mut pos = 0;
    loop {
        let header = &tar[pos..pos + 512];
        if header.iter().all(|b| *b == 0) {
            assert!(
                tar[pos..].iter().all(|b| *b == 0) && tar.len() - pos >= 1024,
                "tar does not end with two zero blocks"
            );
            return members;
        }
        assert_eq!(&header[257..262], b"ustar", "not a ustar header at {pos}");
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let name = cstr(&header[0..100]);
        let size_text = cstr(&header[124..136]);
        let size = u64::from_str_radix(size_text.trim(), 8).unwrap() as usize;
        let start = pos + 512;
        members.push(Member {
            name,
            kind: header[156],
            data: tar[start..start + size].to_vec(),
        });
        pos = start + size.div_ceil(512) * 512;
    }
}

/// Everything a BASE_BACKUP stream yielded, checked for order on the way.
#[derive(Default)]
struct Collected {
    start: Option<(Lsn, u32)>,
    tablespaces: Vec<TablespaceInfo>,
    archives: Vec<(String, Option<String>, Vec<u8>)>,
    progress: Vec<u64>,
    manifest: Option<Vec<u8>>,
    finish: Option<(Lsn, u32)>,
}

async fn collect(
    stream: &mut pitr::pgwire::BaseBackupStream<'_>,
    c: &mut Collected,
) -> pitr::Result<()> {
    let mut n = 0;
    while let Some(ev) = stream.next().await? {
        match ev {
            BackupEvent::Started {
                start_lsn,
                timeline,
            } => {
                assert_eq!(n, 0, "Started comes first");
                c.start = Some((start_lsn, timeline.get()));
            }
            BackupEvent::Tablespaces(list) => {
                assert_eq!(n, 1, "Tablespaces comes second");
                c.tablespaces = list;
            }
            BackupEvent::Archive {
                name,
                tablespace_location,
            } => {
                assert!(c.manifest.is_none(), "archive after the manifest");
                c.archives.push((name, tablespace_location, Vec::new()));
            }
            BackupEvent::Data(b) => c
                .archives
                .last_mut()
                .expect("data in an archive")
                .2
                .extend_from_slice(&b),
            BackupEvent::Progress(p) => c.progress.push(p),
            BackupEvent::ManifestStart => c.manifest = Some(Vec::new()),
            BackupEvent::ManifestData(b) => c
                .manifest
                .as_mut()
                .expect("after ManifestStart")
                .extend_from_slice(&b),
            BackupEvent::Finished { end_lsn, timeline } => {
                c.finish = Some((end_lsn, timeline.get()));
            }
        }
        n += 1;
    }
    Ok(())
}

#[tokio::test]
async fn base_backup_with_a_tablespace() {
    let (dir, pg) = started("pgw-bb");
    let ts_dir = dir.join("ts1");
    std::fs::create_dir(&ts_dir).unwrap();
    chown_postgres(&ts_dir);
    pg.sql(&format!(
        "CREATE TABLESPACE ts1 LOCATION '{}'",
        ts_dir.display()
    ));
    pg.sql(
        "CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; \
         INSERT INTO in_ts SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
    );
    let ts_oid: u32 = pg
        .sql("select oid from pg_tablespace where spcname = 'ts1'")
        .parse()
        .unwrap();
    let rel_path = pg.sql("select pg_relation_filepath('in_ts')");
    let rel_size: usize = pg.sql("select pg_relation_size('in_ts')").parse().unwrap();
    let before: Lsn = pg.sql("select pg_current_wal_lsn()").parse().unwrap();

    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();
    let opts = BaseBackupOptions {
        label: "pgwire 'test'".into(),
        progress: true,
        checkpoint: Checkpoint::Fast,
        manifest: true,
        wait_for_wal_archive: false,
        max_rate: None,
    };
    let mut c = Collected::default();
    {
        let mut stream = conn.base_backup(&opts).await.unwrap();
        collect(&mut stream, &mut c).await.unwrap();
        assert!(
            stream.next().await.unwrap().is_none(),
            "nothing after Finished"
        );
    }

    let (start_lsn, start_tli) = c.start.unwrap();
    let (end_lsn, end_tli) = c.finish.expect("Finished");
    assert_eq!((start_tli, end_tli), (1, 1));
    assert!(
        start_lsn >= before && end_lsn >= start_lsn,
        "{before} {start_lsn} {end_lsn}"
    );

    // Two tablespaces: ours, then the main data directory (NULL oid).
    assert_eq!(c.tablespaces.len(), 2, "{:?}", c.tablespaces);
    let ts = &c.tablespaces[0];
    assert_eq!(ts.oid, Some(ts_oid));
    assert_eq!(ts.location.as_deref(), Some(ts_dir.to_str().unwrap()));
    let main = &c.tablespaces[1];
    assert_eq!((main.oid, main.location.as_deref()), (None, None));
    assert!(ts.size_bytes.unwrap() >= rel_size as u64, "{ts:?}");
    assert!(main.size_bytes.unwrap() > 10 << 20, "{main:?}");

    // One archive per tablespace, the main one last.
    let names: Vec<&str> = c.archives.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(names, [format!("{ts_oid}.tar").as_str(), "base.tar"]);
    assert_eq!(c.archives[0].1.as_deref(), Some(ts_dir.to_str().unwrap()));
    assert_eq!(c.archives[1].1, None);

    let ts_tar = scan_tar(&c.archives[0].2);
    let base_tar = scan_tar(&c.archives[1].2);
    let base: HashMap<&str, &Member> = base_tar.iter().map(|m| (m.name.as_str(), m)).collect();
    assert_eq!(
        String::from_utf8_lossy(&base["PG_VERSION"].data).trim(),
        pg.sql("select current_setting('server_version_num')::int / 10000")
    );
    let label = String::from_utf8_lossy(&base["backup_label"].data).into_owned();
    assert!(label.contains("LABEL: pgwire 'test'"), "{label}");
    assert!(
        label.contains(&format!("START WAL LOCATION: {start_lsn}")),
        "{label}"
    );
    assert!(base.contains_key("global/pg_control"));
    // The table in the tablespace is in the tablespace's archive, whole.
    let in_ts = rel_path
        .strip_prefix(&format!("pg_tblspc/{ts_oid}/"))
        .unwrap_or_else(|| panic!("{rel_path}"));
    let member = ts_tar.iter().find(|m| m.name == in_ts).unwrap_or_else(|| {
        panic!(
            "{in_ts} not in {:?}",
            ts_tar.iter().map(|m| &m.name).collect::<Vec<_>>()
        )
    });
    assert_eq!(member.data.len(), rel_size);

    // Progress counts bytes sent, never backwards, never more than sent.
    let total: usize = c.archives.iter().map(|a| a.2.len()).sum();
    assert!(!c.progress.is_empty());
    assert!(
        c.progress.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        c.progress
    );
    assert!(*c.progress.last().unwrap() as usize <= total);

    // The manifest: JSON, every file in it is in the tars with its size and
    // SHA-256, and its WAL range starts at the backup start.
    let manifest: serde_json::Value = serde_json::from_slice(&c.manifest.unwrap()).unwrap();
    let files = manifest["Files"].as_array().unwrap();
    assert!(files.len() > 500, "{}", files.len());
    let ts_prefix = format!("pg_tblspc/{ts_oid}/");
    for f in files {
        let path = f["Path"].as_str().unwrap();
        let m = match path.strip_prefix(&ts_prefix) {
            Some(p) => ts_tar.iter().find(|m| m.name == p),
            None => base.get(path).copied(),
        }
        .unwrap_or_else(|| panic!("manifest file {path} is not in the archives"));
        assert_eq!(m.kind, b'0', "{path}");
        assert_eq!(m.data.len() as u64, f["Size"].as_u64().unwrap(), "{path}");
        assert_eq!(f["Checksum-Algorithm"], "SHA256", "{path}");
        assert_eq!(
            hex::encode(Sha256::digest(&m.data)),
            f["Checksum"].as_str().unwrap(),
            "{path}"
        );
    }
    let wal = &manifest["WAL-Ranges"][0];
    assert_eq!(wal["Start-LSN"].as_str().unwrap(), start_lsn.to_string());
    assert_eq!(wal["End-LSN"].as_str().unwrap(), end_lsn.to_string());

    // The connection is back at ReadyForQuery and can be used again.
    conn.identify_system().await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn checksum_failure_is_reported_at_the_end() {
    init_tracing();
    let dir = TestDir::new("pgw-cksum");
    let mut pg = Pg::init(dir.join("data"));
    run_ok(
        tool("pg_checksums")
            .args(["--enable", "--no-sync", "-D"])
            .arg(&pg.data),
    );
    pg.start(&[]);
    pg.sql("CREATE TABLE c (id int, v text); INSERT INTO c SELECT g, 'row' FROM generate_series(1, 1000) g");
    let rel = pg.data.join(pg.sql("select pg_relation_filepath('c')"));
    pg.stop();
    // Damage a tuple in block 0 behind the server's back.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&rel).unwrap();
        f.seek(SeekFrom::Start(6000)).unwrap();
        f.write_all(b"CORRUPTED").unwrap();
    }
    pg.start(&[]);

    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();
    let mut c = Collected::default();
    let err = {
        let mut stream = conn
            .base_backup(&BaseBackupOptions::new("cksum"))
            .await
            .unwrap();
        let err = collect(&mut stream, &mut c).await.unwrap_err();
        assert!(stream.next().await.is_err(), "a failed stream stays failed");
        err
    };
    let text = err.to_string();
    assert!(matches!(err, pitr::Error::Postgres(_)), "{err:?}");
    assert!(
        text.contains("checksum verification failure during base backup"),
        "{text}"
    );
    // The failure came at the end: the whole of base.tar and the manifest
    // had been streamed, and no Finished was yielded.
    assert_eq!(c.archives.last().unwrap().0, "base.tar");
    scan_tar(&c.archives.last().unwrap().2);
    assert!(c.manifest.is_some());
    assert!(c.finish.is_none());
    // An ERROR (not FATAL): the connection is usable again.
    conn.identify_system().await.unwrap();
}

/// Waits for the walsender that runs BASE_BACKUP and returns its pid.
fn walsender_pid(pg: &Pg) -> String {
    let start = Instant::now();
    loop {
        let pid = pg.sql("select pid from pg_stat_progress_basebackup limit 1");
        if !pid.is_empty() {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no BASE_BACKUP running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A slow backup (MAX_RATE 32 kB/s) read until its first data.
async fn slow_backup_until_data(
    conn: &mut ReplicationConnection,
) -> pitr::pgwire::BaseBackupStream<'_> {
    let mut opts = BaseBackupOptions::new("slow");
    opts.max_rate = Some(32);
    let mut stream = conn.base_backup(&opts).await.unwrap();
    loop {
        if let BackupEvent::Data(_) = stream.next().await.unwrap().unwrap() {
            return stream;
        }
    }
}

async fn next_error(stream: &mut pitr::pgwire::BaseBackupStream<'_>) -> pitr::Error {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the stream did not fail");
        match stream.next().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream finished instead of failing"),
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn server_going_away_mid_stream() {
    let (_dir, pg) = started("pgw-drop");

    // Terminated by an administrator: the server says so (FATAL).
    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();
    {
        let mut stream = slow_backup_until_data(&mut conn).await;
        let pid = walsender_pid(&pg);
        assert_eq!(pg.sql(&format!("select pg_terminate_backend({pid})")), "t");
        let e = next_error(&mut stream).await.to_string();
        assert!(e.contains("administrator command"), "{e}");
    }
    let e = conn.identify_system().await.unwrap_err().to_string();
    assert!(e.contains("no longer usable"), "{e}");

    // Killed outright: the connection just ends.
    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();
    let mut stream = slow_backup_until_data(&mut conn).await;
    let pid = walsender_pid(&pg);
    run_ok(std::process::Command::new("kill").args(["-9", &pid]));
    let e = next_error(&mut stream).await.to_string();
    assert!(
        e.contains("closed the connection unexpectedly while streaming BASE_BACKUP"),
        "{e}"
    );
    assert!(stream.next().await.is_err());
}

#[tokio::test]
async fn abandoned_stream_leaves_the_connection_unusable() {
    let (_dir, pg) = started("pgw-abandon");
    let mut conn = ReplicationConnection::connect(&unix_params(&pg, "postgres"))
        .await
        .unwrap();
    drop(slow_backup_until_data(&mut conn).await);
    let e = conn
        .simple_query("SHOW port")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("dropped before its end"), "{e}");
}

/// Throughput against pg_basebackup on a ~200 MB pgbench database, output
/// discarded on both sides, same options (fast checkpoint, SHA-256
/// manifest, no WAL). Prints MB/s and the ratio; asserts only that both
/// streamed about the same number of bytes.
/// `cargo test --test pgwire_replication bench -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn bench_base_backup_vs_pg_basebackup() {
    let (_dir, pg) = started("pgw-bench");
    pg.pgbench(&["-i", "-q", "-s", "14"]);
    pg.sql("CHECKPOINT");
    println!(
        "database size: {}",
        pg.sql("select pg_size_pretty(pg_database_size('postgres'))")
    );
    let params = unix_params(&pg, "postgres");

    let ours = || async {
        let t = Instant::now();
        let mut conn = ReplicationConnection::connect(&params).await.unwrap();
        let mut stream = conn
            .base_backup(&BaseBackupOptions::new("bench"))
            .await
            .unwrap();
        let mut bytes = 0u64;
        while let Some(ev) = stream.next().await.unwrap() {
            if let BackupEvent::Data(b) | BackupEvent::ManifestData(b) = ev {
                bytes += b.len() as u64;
            }
        }
        (bytes, t.elapsed())
    };
    let theirs = || {
        let t = Instant::now();
        let out = tool("pg_basebackup")
            .arg("-h")
            .arg(&pg.sock)
            .arg("-p")
            .arg(pg.port.to_string())
            .args(["-U", "postgres", "-Ft", "-X", "none", "-c", "fast"])
            .args(["--manifest-checksums=SHA256", "-D", "-"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = out;
        let mut stdout = child.stdout.take().unwrap();
        let bytes = std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
        assert!(child.wait().unwrap().success());
        (bytes, t.elapsed())
    };
    let mb = |b: u64, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    let mut ratios = Vec::new();
    for round in 0..3 {
        let (ob, od) = ours().await;
        let (tb, td) = theirs();
        let (o, t) = (mb(ob, od), mb(tb, td));
        println!(
            "round {round}: pitr {ob} B in {od:.2?} = {o:.0} MB/s; pg_basebackup {tb} B in \
             {td:.2?} = {t:.0} MB/s; ratio {:.2}",
            o / t
        );
        assert!(
            (ob as f64 - tb as f64).abs() / (tb as f64) < 0.05,
            "{ob} vs {tb}"
        );
        ratios.push(o / t);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("test process peak RSS ({peak}), streaming ours 3 times");
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median ratio pitr / pg_basebackup: {:.2}", ratios[1]);
}
