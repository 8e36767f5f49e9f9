//! Printing the catalog: a table for people, JSON for scripts.

use clap::ValueEnum;
use serde_json::json;

use pitr::backup::catalog::CatalogEntry;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn entry_json(e: &CatalogEntry) -> serde_json::Value {
    let mut v = serde_json::to_value(&e.info).expect("backup info serialises");
    v["usable"] = json!(e.usable());
    v["details"] = serde_json::to_value(&e.details).expect("details serialise");
    v
}

fn time(t: &Option<chrono::DateTime<chrono::FixedOffset>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S%:z").to_string())
        .unwrap_or_else(|| "-".into())
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn print_list(entries: &[CatalogEntry], format: Format) {
    match format {
        Format::Json => {
            let list: Vec<_> = entries.iter().map(entry_json).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "backups": list })).expect("json")
            );
        }
        Format::Text => {
            println!(
                "{:<16} {:<12} {:<9} {:<6} {:<25} {:<25} {:<12} {:<12} {:>3} {:>12}",
                "ID",
                "NAME",
                "STATUS",
                "USABLE",
                "BEGIN",
                "END",
                "BEGIN LSN",
                "END LSN",
                "TLI",
                "SIZE"
            );
            for e in entries {
                let i = &e.info;
                println!(
                    "{:<16} {:<12} {:<9} {:<6} {:<25} {:<25} {:<12} {:<12} {:>3} {:>12}",
                    i.backup_id.as_str(),
                    i.backup_name.as_deref().unwrap_or("-"),
                    i.status.as_str(),
                    if e.usable() { "yes" } else { "no" },
                    time(&i.begin_time),
                    time(&i.end_time),
                    opt(&i.begin_xlog),
                    opt(&i.end_xlog),
                    opt(&i.timeline),
                    opt(&i.size),
                );
            }
        }
    }
}

pub fn print_entry(e: &CatalogEntry, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&entry_json(e)).expect("json")
        ),
        Format::Text => {
            let i = &e.info;
            let rows = [
                ("Backup ID", i.backup_id.to_string()),
                ("Name", opt(&i.backup_name)),
                ("Status", i.status.to_string()),
                (
                    "Usable",
                    if e.usable() {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ),
                ("Error", opt(&i.error)),
                ("Server", i.server_name.clone()),
                ("System id", opt(&i.systemid)),
                ("PostgreSQL", opt(&i.version)),
                ("Timeline", opt(&i.timeline)),
                ("Begin time", time(&i.begin_time)),
                ("End time", time(&i.end_time)),
                ("Begin LSN", opt(&i.begin_xlog)),
                ("End LSN", opt(&i.end_xlog)),
                ("Begin WAL", opt(&i.begin_wal)),
                ("End WAL", opt(&i.end_wal)),
                ("Size stored", opt(&i.size)),
                ("PGDATA", opt(&i.pgdata)),
            ];
            for (k, v) in rows {
                println!("{k:<12} {v}");
            }
            for t in &i.tablespaces {
                println!(
                    "{:<12} {} (oid {}) at {}",
                    "Tablespace", t.name, t.oid, t.location
                );
            }
            if let Some(d) = &e.details {
                for o in &d.objects {
                    println!(
                        "{:<12} {} ({} bytes, {} stored)",
                        "Object", o.key, o.plain_size, o.stored_size
                    );
                }
            }
        }
    }
}
