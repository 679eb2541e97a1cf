//! `/metrics`: the node's figures in the OpenMetrics text format, encoded by the Prometheus
//! project's Rust client (`prometheus-client`) rather than by hand. The figures live where
//! they are counted (atomics the server loop, the spool and the API update); a scrape copies
//! them into a registry built for that scrape, so nothing here keeps state of its own.

use super::ApiState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of [`exposition`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a family: (name, value) pairs.
type Labels = Vec<(String, String)>;

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// A counter family with one series per label value.
fn counters(
    label: &str,
    series: impl IntoIterator<Item = (String, u64)>,
) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    for (value, n) in series {
        f.get_or_create(&vec![(label.to_string(), value)]).inc_by(n);
    }
    f
}

/// A gauge family with one series per label value.
fn gauges(label: &str, series: impl IntoIterator<Item = (String, u64)>) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    for (value, n) in series {
        f.get_or_create(&vec![(label.to_string(), value)])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    f
}

/// Every figure of the node, encoded. Counter names get `_total` from the encoder
/// (`switchyard_calls_started_total`), as Prometheus expects.
pub fn exposition(st: &ApiState) -> Result<String, std::fmt::Error> {
    let l = &st.live;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // In a cluster every series names its node, so one Prometheus tells the nodes apart
    // (a node alone keeps its series unlabelled, as before).
    let mut r = if st.call_bus().is_some() {
        let node = (
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(st.node_id()),
        );
        Registry::with_prefix_and_labels("switchyard", std::iter::once(node))
    } else {
        Registry::with_prefix("switchyard")
    };
    r.register(
        "calls_active",
        "Calls in progress",
        gauge(g(&l.calls_active)),
    );
    r.register(
        "calls_started",
        "Calls accepted since start-up",
        counter(g(&l.calls_started)),
    );
    r.register(
        "calls_ended",
        "Calls ended since start-up",
        counter(g(&l.calls_ended)),
    );
    r.register(
        "calls_finished",
        "Calls finished (call records written), by disposition",
        counters(
            "disposition",
            crate::call::cdr::Disposition::ALL
                .iter()
                .zip(st.services.finished.iter())
                .map(|(d, n)| (d.as_str().to_string(), g(n))),
        ),
    );
    r.register(
        "registrations",
        "Registered contacts",
        gauge(g(&l.registrations)),
    );
    r.register(
        "api_event_streams",
        "Tenants' call event streams open now",
        gauge(st.services.events.open_streams() as u64),
    );
    r.register(
        "api_event_stream_missed",
        "Call events readers missed by falling behind (each was told with a lagged event)",
        counter(st.services.events.missed()),
    );
    r.register(
        "sip_malformed",
        "Malformed SIP messages received",
        counter(g(&l.sip_malformed)),
    );
    r.register(
        "sip_tls_handshake_failures",
        "TLS handshakes (tls: and wss: listeners) that failed or timed out",
        counter(g(&l.sip_tls_handshake_failures)),
    );
    r.register(
        "trunk_dns_failures",
        "Trunk name lookups (NAPTR, SRV, A/AAAA) that failed or found nothing",
        counter(g(&l.trunk_dns_failures)),
    );
    r.register(
        "trunk_failovers",
        "Trunk calls moved on to the next target (silence, unreachable, timeout, 503)",
        counter(g(&l.trunk_failovers)),
    );
    r.register(
        "trunk_unresolved",
        "Trunk calls that failed because the trunk's name had no target",
        counter(g(&l.trunk_unresolved)),
    );
    r.register(
        "sip_replaces_refused",
        "Attended transfers refused: Replaces named no answered call of the transferor's",
        counter(g(&l.sip_replaces_refused)),
    );
    r.register(
        "sip_aliases_refused",
        "Connection reuse offers (RFC 5923 alias) refused: a name the peer's certificate does not hold, or too many",
        counter(g(&l.sip_aliases_refused)),
    );
    r.register(
        "srtp_offers_refused",
        "Calls refused for their SRTP offer (keys without TLS, against the tenant's policy)",
        counter(g(&l.srtp_offers_refused)),
    );
    r.register(
        "srtp_packets_refused",
        "SRTP/SRTCP packets dropped: failed authentication, replays, not SRTP",
        counter(g(&l.srtp_packets_refused)),
    );
    r.register(
        "sip_auth_failures",
        "Failed digest authentications",
        counter(g(&l.sip_auth_failures)),
    );
    r.register(
        "sip_auth_refused",
        "Requests refused while their username and address, or their address, is blocked",
        counter(g(&l.sip_auth_refused)),
    );
    r.register(
        "sip_auth_blocks",
        "Blocks started by too many failed authentications",
        counter(g(&l.sip_auth_blocks)),
    );
    r.register("media_legs", "Media legs running", gauge(g(&l.media_legs)));
    r.register(
        "rtp_packets_received",
        "RTP packets received",
        counter(g(&l.rtp_packets_in)),
    );
    r.register(
        "rtp_packets_sent",
        "RTP packets sent",
        counter(g(&l.rtp_packets_out)),
    );
    r.register(
        "rtp_late_ticks",
        "Media ticks that started more than 2 ms late",
        counter(g(&l.rtp_late_ticks)),
    );
    r.register(
        "config_revision",
        "Tenant configuration revision",
        gauge(st.store.revision()),
    );
    let config = st.config_report();
    r.register(
        "config_source_up",
        "1 when the cluster's configuration source answers and this node is up to date with it (always 1 on a single node)",
        gauge(u64::from(config.state == "ok")),
    );
    r.register(
        "config_lag_revisions",
        "Revisions of the cluster's tenant bucket not applied on this node yet",
        gauge(config.lag_revisions),
    );
    r.register(
        "config_lag_seconds",
        "Seconds since this node was last known to be up to date with the cluster's tenant bucket",
        gauge(config.lag_seconds),
    );
    r.register(
        "config_rejected",
        "Tenant documents from the cluster that failed validation here and were not applied",
        counter(config.rejected),
    );
    if let Some(stores) = &st.services.stores {
        let sp = &stores.spool.status;
        let queues = [
            (&sp.history, "history"),
            (&sp.blob, "blob"),
            (&sp.disk, "spool_disk"),
        ];
        let per_queue = |f: &dyn Fn(&crate::spool::QueueStatus) -> u64| {
            queues
                .iter()
                .map(|(q, name)| (name.to_string(), f(q)))
                .collect::<Vec<_>>()
        };
        r.register(
            "spool_depth",
            "Entries waiting in the local spool for a store",
            gauges("queue", per_queue(&|q| q.depth.load(Ordering::Relaxed))),
        );
        r.register(
            "spool_oldest_age_seconds",
            "Age of the oldest entry waiting in the spool",
            gauges("queue", per_queue(&|q| q.oldest_age().as_secs())),
        );
        r.register(
            "spool_moved",
            "Entries moved from the spool to the store",
            counters("queue", per_queue(&|q| q.moved.load(Ordering::Relaxed))),
        );
        r.register(
            "store_failures",
            "Failed attempts to write to a store",
            counters("queue", per_queue(&|q| q.failures.load(Ordering::Relaxed))),
        );
        r.register(
            "store_failing_seconds",
            "How long a store has been failing (0: working)",
            gauges(
                "queue",
                per_queue(&|q| q.failing_for().map(|d| d.as_secs()).unwrap_or(0)),
            ),
        );
    }
    let responses: Vec<(String, u64)> = st
        .responses
        .lock()
        .map(|m| m.iter().map(|(code, n)| (code.to_string(), *n)).collect())
        .unwrap_or_default();
    r.register(
        "api_responses",
        "Admin API responses by status",
        counters("status", responses),
    );
    let mut text = String::new();
    encode(&mut text, &r)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_their_labels_and_counters_get_total() {
        let mut r = Registry::with_prefix("switchyard");
        r.register("calls_active", "Calls in progress", gauge(3));
        r.register("calls_started", "Calls accepted", counter(7));
        r.register(
            "calls_finished",
            "Calls finished",
            counters("disposition", [("answered".to_string(), 2)]),
        );
        let mut text = String::new();
        encode(&mut text, &r).expect("encode");
        assert!(text.contains("switchyard_calls_active 3\n"), "{text}");
        assert!(
            text.contains("switchyard_calls_started_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_calls_finished_total{disposition=\"answered\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
