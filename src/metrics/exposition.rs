//! Samples in Prometheus's text exposition format (version 0.0.4), encoded
//! by the `prometheus-client` crate: each family once, with its HELP and
//! TYPE, whatever the number of servers.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::families::{Kind, Sample, DEFS};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct Samples(Vec<Sample>);

impl Collector for Samples {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for def in DEFS {
            let mine: Vec<&Sample> = self
                .0
                .iter()
                .filter(|s| std::ptr::eq(s.def, *def))
                .collect();
            if mine.is_empty() {
                continue;
            }
            // prometheus-client adds `_total` to counters itself.
            let (name, kind) = match def.kind {
                Kind::Counter => (
                    def.name.strip_suffix("_total").unwrap_or(def.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (def.name, MetricType::Gauge),
            };
            let mut family = encoder.encode_descriptor(name, def.help, None, kind)?;
            for s in mine {
                let labels: Vec<(&str, &str)> = def
                    .labels
                    .iter()
                    .copied()
                    .zip(s.labels.iter().map(String::as_str))
                    .collect();
                let mut m = family.encode_family(&labels)?;
                match def.kind {
                    Kind::Counter => m
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(
                            &s.value, None,
                        )?,
                    Kind::Gauge => m.encode_gauge(&s.value)?,
                }
            }
        }
        Ok(())
    }
}

/// The text exposition of `samples`.
pub fn encode(samples: Vec<Sample>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Samples(samples)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::families::{samples, ARCHIVE_FAILURES};
    use crate::metrics::gather::gather;
    use crate::wal::push::push;
    use crate::wal::test_segments::{fs_repo, write_segment};

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn two_servers_share_each_family_and_missing_things_read_zero_or_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(&dir.path().join("repo"));
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        push(&repo, &write_segment(&wal, 2, 4, 9)).await.unwrap();
        let (a, _) = gather(&repo, "a", None, None).await;
        let (mut b, _) = gather(&repo, "b", None, None).await;
        b.store_up = false;
        let now = chrono::Utc::now();
        let mut all = samples(&a, now);
        all.extend(samples(&b, now));
        let text = encode(all);
        // One HELP and TYPE per family.
        assert_eq!(
            text.matches("# TYPE pitr_last_archived_wal_timestamp_seconds gauge")
                .count(),
            1,
            "{text}"
        );
        let tip = value_of(
            &text,
            "pitr_last_archived_wal_timestamp_seconds{server=\"a\",timeline=\"2\"}",
        )
        .unwrap_or_else(|| panic!("{text}"));
        assert!(tip > 1.7e9, "{text}");
        assert_eq!(value_of(&text, "pitr_store_up{server=\"a\"}"), Some(1.0));
        assert_eq!(value_of(&text, "pitr_store_up{server=\"b\"}"), Some(0.0));
        // No backup: timestamps are 0, the age and size are left out.
        assert_eq!(
            value_of(
                &text,
                "pitr_last_available_backup_timestamp_seconds{server=\"a\"}"
            ),
            Some(0.0)
        );
        assert!(
            !text.contains("pitr_last_available_backup_age_seconds"),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "pitr_last_drill_timestamp_seconds{server=\"a\"}"),
            Some(0.0)
        );
        assert!(!text.contains("pitr_last_drill_success{"), "{text}");
        // No counters anywhere yet (no wal-push hook ran, no PGDATA).
        assert!(!text.contains(ARCHIVE_FAILURES.name), "{text}");
        assert!(
            text.contains("# TYPE pitr_status_refresh_failures_total counter"),
            "{text}"
        );
    }
}
