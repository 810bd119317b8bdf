//! `/metrics` in the Prometheus/OpenMetrics text format (crate `prometheus-client`).
//! Counters the protocol thread and the transport keep are copied in at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::driver::DriverStats;
use crate::http_serve::HttpStats;
use crate::transport::{ConnectionRefusal, FrameRefusal, TransportStats};

/// One label, e.g. `reason="checksum"`.
type Labelled<M> = Family<[(&'static str, &'static str); 1], M>;

pub struct Metrics {
    registry: Registry,
    commit_seconds: Histogram,
    lease_reads: Counter,
    fsyncs: Counter,
    fsync_seconds: Counter<f64, AtomicU64>,
    fsync_seconds_max: Gauge<f64, AtomicU64>,
    records_persisted: Counter,
    protocol_inputs: Counter,
    client_outputs: Counter,
    frames_sent: Counter,
    frames_received: Counter,
    frames_dropped: Counter,
    frames_refused: Counter,
    peer_connects: Counter,
    peer_frames_refused: Labelled<Counter>,
    peer_messages_refused: Labelled<Counter>,
    peer_connections_refused: Labelled<Counter>,
    peer_inbound_connections: Gauge,
    accept_errors: Labelled<Counter>,
    http_connections: Gauge,
    http_connections_max: Gauge,
    http_connections_refused: Counter,
    http_connections_timed_out: Labelled<Counter>,
    open_files_limit: Gauge,
    decided_upto: Gauge,
    applied_upto: Gauge,
    ballot_round: Gauge,
    is_leader: Gauge,
    recovering: Gauge,
    checkpoint_slot: Gauge,
    quorum_connected: Gauge,
    requests_pending: Gauge,
    leader_queue: Gauge,
    slots_in_flight: Gauge,
    peer_queue_frames: Gauge,
    batches_proposed: Counter,
    commands_proposed: Counter,
    elections_started: Counter,
    waiters: Gauge,
    config_epoch: Gauge,
    latest_config_epoch: Gauge,
    voters: Gauge,
    learners: Gauge,
    removed: Gauge,
    learner_lag_slots: Family<[(&'static str, String); 1], Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("synod");
        let metrics = Metrics {
            // 100 µs to ~6.5 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            lease_reads: Counter::default(),
            fsyncs: Counter::default(),
            fsync_seconds: Counter::default(),
            fsync_seconds_max: Gauge::default(),
            records_persisted: Counter::default(),
            protocol_inputs: Counter::default(),
            client_outputs: Counter::default(),
            frames_sent: Counter::default(),
            frames_received: Counter::default(),
            frames_dropped: Counter::default(),
            frames_refused: Counter::default(),
            peer_connects: Counter::default(),
            peer_frames_refused: Family::default(),
            peer_messages_refused: Family::default(),
            peer_connections_refused: Family::default(),
            peer_inbound_connections: Gauge::default(),
            accept_errors: Family::default(),
            http_connections: Gauge::default(),
            http_connections_max: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_connections_timed_out: Family::default(),
            open_files_limit: Gauge::default(),
            decided_upto: Gauge::default(),
            applied_upto: Gauge::default(),
            ballot_round: Gauge::default(),
            is_leader: Gauge::default(),
            recovering: Gauge::default(),
            config_epoch: Gauge::default(),
            latest_config_epoch: Gauge::default(),
            voters: Gauge::default(),
            learners: Gauge::default(),
            removed: Gauge::default(),
            learner_lag_slots: Family::default(),
            checkpoint_slot: Gauge::default(),
            quorum_connected: Gauge::default(),
            requests_pending: Gauge::default(),
            leader_queue: Gauge::default(),
            slots_in_flight: Gauge::default(),
            peer_queue_frames: Gauge::default(),
            batches_proposed: Counter::default(),
            commands_proposed: Counter::default(),
            elections_started: Counter::default(),
            waiters: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "commit_seconds",
            "Client call latency, from request to applied output",
            m.commit_seconds.clone(),
        );
        registry.register(
            "lease_reads",
            "Linearizable reads served under the leader lease",
            m.lease_reads.clone(),
        );
        registry.register("fsyncs", "Write-ahead log syncs (group commits)", m.fsyncs.clone());
        registry.register("fsync_seconds", "Time spent in write-ahead log syncs", m.fsync_seconds.clone());
        registry.register("fsync_seconds_max", "Slowest write-ahead log sync", m.fsync_seconds_max.clone());
        registry.register("records_persisted", "Protocol records made durable", m.records_persisted.clone());
        registry.register(
            "protocol_turns",
            "Turns of the protocol thread (one sync each at most)",
            m.protocol_inputs.clone(),
        );
        registry.register("client_outputs", "Client outputs delivered", m.client_outputs.clone());
        registry.register("frames_sent", "Frames sent to peers", m.frames_sent.clone());
        registry.register("frames_received", "Frames received from peers", m.frames_received.clone());
        registry.register(
            "frames_dropped_queue_full",
            "Frames dropped: peer queue full",
            m.frames_dropped.clone(),
        );
        registry.register(
            "frames_refused",
            "Frames refused, every reason (see synod_peer_frames_refused_total)",
            m.frames_refused.clone(),
        );
        registry.register("peer_connects", "Outbound peer connections made", m.peer_connects.clone());
        registry.register(
            "peer_frames_refused",
            "Frames refused on the peer port, by reason (a bad hello's frame included)",
            m.peer_frames_refused.clone(),
        );
        registry.register(
            "peer_messages_refused",
            "Well-formed messages from peers that broke the protocol's rules, refused by the node, by reason",
            m.peer_messages_refused.clone(),
        );
        registry.register(
            "peer_connections_refused",
            "Inbound peer connections refused at their hello or for want of a slot, by reason",
            m.peer_connections_refused.clone(),
        );
        registry.register(
            "peer_inbound_connections",
            "Inbound peer connections open now",
            m.peer_inbound_connections.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (e.g. out of file descriptors), by listener; each is retried after a pause",
            m.accept_errors.clone(),
        );
        // Every label value from the start, so that a zero is a zero and not a gap.
        for reason in FrameRefusal::ALL {
            let _ = m.peer_frames_refused.get_or_create(&[("reason", reason.label())]);
        }
        for reason in ConnectionRefusal::ALL {
            let _ = m.peer_connections_refused.get_or_create(&[("reason", reason.label())]);
        }
        for reason in synod_core::Refusal::ALL {
            let _ = m.peer_messages_refused.get_or_create(&[("reason", reason.name())]);
        }
        let _ = m.accept_errors.get_or_create(&[("listener", "peer")]);
        let _ = m.accept_errors.get_or_create(&[("listener", "http")]);
        registry.register("http_connections", "Client connections open now", m.http_connections.clone());
        registry.register(
            "http_connections_max",
            "Client connections held at most (http.connections_max, fitted under the open-file limit)",
            m.http_connections_max.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Client connections refused at the cap (answered 503 too_many_connections, or closed)",
            m.http_connections_refused.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "Client connections closed by a timeout: header (no request head in time) or idle",
            m.http_connections_timed_out.clone(),
        );
        let _ = m.http_connections_timed_out.get_or_create(&[("timeout", "header")]);
        let _ = m.http_connections_timed_out.get_or_create(&[("timeout", "idle")]);
        registry.register(
            "open_files_limit",
            "The process's open-file limit (soft RLIMIT_NOFILE) after start",
            m.open_files_limit.clone(),
        );
        registry.register("decided_upto", "Every slot below is decided here", m.decided_upto.clone());
        registry.register("applied_upto", "Every slot below is applied here", m.applied_upto.clone());
        registry.register(
            "ballot_round",
            "Round of the highest ballot seen (elections)",
            m.ballot_round.clone(),
        );
        registry.register("is_leader", "1 if this node is the active leader", m.is_leader.clone());
        registry.register(
            "recovering",
            "1 while this node recovers from damaged or lost storage and does not vote",
            m.recovering.clone(),
        );
        registry.register("checkpoint_slot", "The newest checkpoint's last slot", m.checkpoint_slot.clone());
        registry.register(
            "config_epoch",
            "Epoch of the configuration governing the next undecided slot",
            m.config_epoch.clone(),
        );
        registry.register(
            "latest_config_epoch",
            "Epoch of the newest configuration decided (above config_epoch while a change takes force)",
            m.latest_config_epoch.clone(),
        );
        registry.register("voters", "Voters of the newest configuration", m.voters.clone());
        registry.register("learners", "Learners of the newest configuration", m.learners.clone());
        registry.register("removed", "1 if the group removed this node", m.removed.clone());
        registry.register(
            "learner_lag_slots",
            "Slots each learner is behind this node's decided prefix, as last heard (-1: not heard)",
            m.learner_lag_slots.clone(),
        );
        registry.register("quorum_connected", "1 if this node hears a majority", m.quorum_connected.clone());
        registry.register(
            "requests_pending",
            "Client commands waiting at this node",
            m.requests_pending.clone(),
        );
        registry.register("leader_queue", "Commands queued at the leader for a slot", m.leader_queue.clone());
        registry.register("slots_in_flight", "Slots in phase 2 at this leader", m.slots_in_flight.clone());
        registry.register("peer_queue_frames", "Frames queued for peers", m.peer_queue_frames.clone());
        registry.register(
            "batches_proposed",
            "Client batches this node proposed (one slot each)",
            m.batches_proposed.clone(),
        );
        registry.register(
            "commands_proposed",
            "Client commands in those batches",
            m.commands_proposed.clone(),
        );
        registry.register(
            "elections_started",
            "Leaderships (phase 1 runs) this node started",
            m.elections_started.clone(),
        );
        registry.register("waiters", "HTTP calls waiting for an output", m.waiters.clone());
        Metrics { registry, ..metrics }
    }

    pub fn observe_commit(&self, elapsed: Duration) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn observe_lease_read(&self) {
        self.lease_reads.inc();
    }

    pub fn render(
        &self,
        stats: &DriverStats,
        transport: &TransportStats,
        http: &HttpStats,
        peer_queue_frames: usize,
    ) -> String {
        self.peer_queue_frames.set(peer_queue_frames as i64);
        let storage = &stats.storage;
        self.fsyncs.inner().store(storage.wal_syncs, Ordering::Relaxed);
        self.fsync_seconds
            .inner()
            .store((storage.wal_sync_nanos_total as f64 / 1e9).to_bits(), Ordering::Relaxed);
        self.fsync_seconds_max.set(storage.wal_sync_nanos_max as f64 / 1e9);
        self.records_persisted.inner().store(storage.records_appended, Ordering::Relaxed);
        self.protocol_inputs.inner().store(stats.turns, Ordering::Relaxed);
        self.client_outputs.inner().store(stats.commands_applied, Ordering::Relaxed);
        self.frames_sent.inner().store(transport.frames_sent.load(Ordering::Relaxed), Ordering::Relaxed);
        self.frames_received
            .inner()
            .store(transport.frames_received.load(Ordering::Relaxed), Ordering::Relaxed);
        self.frames_dropped
            .inner()
            .store(transport.frames_dropped_queue_full.load(Ordering::Relaxed), Ordering::Relaxed);
        self.frames_refused
            .inner()
            .store(transport.frames_refused.load(Ordering::Relaxed), Ordering::Relaxed);
        self.peer_connects.inner().store(transport.connects.load(Ordering::Relaxed), Ordering::Relaxed);
        for reason in FrameRefusal::ALL {
            let count = transport.frames_refused_for(reason);
            self.peer_frames_refused
                .get_or_create(&[("reason", reason.label())])
                .inner()
                .store(count, Ordering::Relaxed);
        }
        for reason in ConnectionRefusal::ALL {
            let count = transport.connections_refused_for(reason);
            let counter = self.peer_connections_refused.get_or_create(&[("reason", reason.label())]);
            counter.inner().store(count, Ordering::Relaxed);
        }
        self.peer_inbound_connections.set(transport.inbound_connections.load(Ordering::Relaxed) as i64);
        let peer_accept_errors = transport.accept_errors.load(Ordering::Relaxed);
        self.accept_errors
            .get_or_create(&[("listener", "peer")])
            .inner()
            .store(peer_accept_errors, Ordering::Relaxed);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        self.accept_errors
            .get_or_create(&[("listener", "http")])
            .inner()
            .store(load(&http.accept_errors), Ordering::Relaxed);
        self.http_connections.set(load(&http.connections_open) as i64);
        self.http_connections_max.set(load(&http.connections_max) as i64);
        self.http_connections_refused.inner().store(load(&http.connections_refused), Ordering::Relaxed);
        for (timeout, counter) in [("header", &http.header_timeouts), ("idle", &http.idle_timeouts)] {
            let family = self.http_connections_timed_out.get_or_create(&[("timeout", timeout)]);
            family.inner().store(load(counter), Ordering::Relaxed);
        }
        self.open_files_limit.set(load(&http.open_files_limit) as i64);
        self.waiters.set(stats.waiters as i64);
        if let Some(status) = &stats.status {
            self.decided_upto.set(status.decided_upto as i64);
            self.applied_upto.set(status.applied_upto as i64);
            self.ballot_round.set(status.ballot_max.round as i64);
            self.is_leader.set(status.is_leader as i64);
            self.recovering.set(status.recovery.is_some() as i64);
            self.checkpoint_slot.set(status.checkpoint_slot.map_or(-1, |s| s as i64));
            self.quorum_connected.set(status.quorum_connected as i64);
            self.requests_pending.set(status.requests_pending as i64);
            self.leader_queue.set(status.leader_queue as i64);
            self.slots_in_flight.set(status.slots_in_flight as i64);
            self.batches_proposed.inner().store(status.batches_proposed, Ordering::Relaxed);
            self.commands_proposed.inner().store(status.commands_proposed, Ordering::Relaxed);
            self.elections_started.inner().store(status.elections_started, Ordering::Relaxed);
            for (reason, count) in status.refusals.by_reason() {
                let counter = self.peer_messages_refused.get_or_create(&[("reason", reason.name())]);
                counter.inner().store(count, Ordering::Relaxed);
            }
        }
        if let (Some(in_force), Some(latest)) = (&stats.configuration, &stats.latest_configuration) {
            self.config_epoch.set(in_force.epoch as i64);
            self.latest_config_epoch.set(latest.epoch as i64);
            self.voters.set(latest.voters.len() as i64);
            self.learners.set(latest.learners.len() as i64);
            // Learners come and go: only the current ones have a series.
            self.learner_lag_slots.clear();
            for learner in &latest.learners {
                let lag = stats.status.as_ref().and_then(|status| {
                    let peer = status.peers.iter().find(|p| p.id == *learner)?;
                    Some(status.decided_upto.saturating_sub(peer.decided_upto) as i64)
                });
                self.learner_lag_slots
                    .get_or_create(&[("node", learner.0.to_string())])
                    .set(lag.unwrap_or(-1));
            }
        }
        self.removed.set(stats.removed as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
