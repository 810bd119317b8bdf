//! The run's fingerprint and its readable trace.
//!
//! Every processed event feeds the trace hash (time, kind, node and the message bytes),
//! so two runs with equal hashes processed the same events in the same order. The
//! readable lines are built only when tracing is on, and building them reads nothing
//! random: a traced run is the same run.

use std::fmt::Write;

use synod_core::Message;

use crate::checkers::describe;

/// FxHash's multiplier: a fast, stable mix (std's `DefaultHasher` may change between Rust
/// releases, and trace hashes are compared across builds).
const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Longest trace line kept; longer ones (big batches) are cut.
const LINE_BYTES_MAX: usize = 400;

pub(crate) struct Tracer {
    hash: u64,
    lines: Option<Vec<String>>,
}

impl Tracer {
    pub(crate) fn new(enabled: bool) -> Tracer {
        Tracer { hash: 0xcbf2_9ce4_8422_2325, lines: enabled.then(Vec::new) }
    }

    fn mix(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(MIX);
    }

    /// Folds one event into the hash.
    pub(crate) fn event(&mut self, time_us: u64, kind: u8, node: usize, bytes: &[u8]) {
        self.mix(time_us);
        self.mix(u64::from(kind) << 32 | node as u64);
        self.mix(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(u64::from_le_bytes(tail));
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// Adds a readable line, prefixed with the time in milliseconds. Call only when
    /// `enabled()`, so that formatting costs nothing in untraced runs.
    pub(crate) fn line(&mut self, time_us: u64, text: &str) {
        if let Some(lines) = &mut self.lines {
            let mut line = String::with_capacity(text.len().min(LINE_BYTES_MAX) + 16);
            let _ = write!(line, "{:>6}.{:03}ms ", time_us / 1000, time_us % 1000);
            if text.len() > LINE_BYTES_MAX {
                let mut cut = LINE_BYTES_MAX;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.push_str(&text[..cut]);
                line.push_str(" …");
            } else {
                line.push_str(text);
            }
            lines.push(line);
        }
    }

    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

/// Event kinds folded into the hash.
pub(crate) mod kind {
    pub const DELIVER: u8 = 1;
    pub const TIMER: u8 = 2;
    pub const FSYNC: u8 = 3;
    pub const REQUEST: u8 = 4;
    pub const CLIENT: u8 = 5;
    pub const NEMESIS: u8 = 6;
    pub const CHECK: u8 = 7;
    pub const PHASE: u8 = 8;
    pub const OUTPUT: u8 = 9;
}

/// One message, readably: ballots as `round.leader`, values as the client commands they
/// carry (`client:seq`), never raw bytes.
pub(crate) fn describe_message<C: std::fmt::Debug>(message: &Message<C>) -> String {
    match message {
        Message::Prepare { ballot, from_slot } => format!("prepare b={ballot} from_slot={from_slot}"),
        Message::Promise { ballot, decided_upto, accepted, decided } => {
            let accepted: Vec<String> =
                accepted.iter().map(|p| format!("{}@{}={}", p.slot, p.ballot, describe(&p.value))).collect();
            let decided: Vec<String> = decided.iter().map(|(s, v)| format!("{s}={}", describe(v))).collect();
            format!(
                "promise b={ballot} decided_upto={decided_upto} accepted=[{}] decided=[{}]",
                accepted.join(" "),
                decided.join(" ")
            )
        }
        Message::Accept { pvalue, decided_upto } => format!(
            "accept b={} slot={} value={} decided_upto={decided_upto}",
            pvalue.ballot,
            pvalue.slot,
            describe(&pvalue.value)
        ),
        Message::Accepted { ballot, slot } => format!("accepted b={ballot} slot={slot}"),
        Message::Nack { ballot, promised } => format!("nack b={ballot} promised={promised}"),
        Message::Decision { slot, value } => format!("decision slot={slot} value={}", describe(value)),
        Message::HeartbeatRequest { round, dir_id, recovering } => {
            format!("heartbeat-request round={round} dir_id={dir_id:x} recovering={recovering}")
        }
        Message::HeartbeatReply { round, status } => format!(
            "heartbeat-reply round={round} ballot_max={} leader={} quorum_connected={} happy={} decided_upto={} lease={}",
            status.ballot_max,
            status.leader.map_or_else(|| "-".to_string(), |b| b.to_string()),
            status.quorum_connected,
            status.happy,
            status.decided_upto,
            status.lease
        ),
        Message::Forward { commands } => {
            let ids: Vec<String> = commands.iter().map(|c| format!("{}:{}", c.client_id, c.seq)).collect();
            format!("forward [{}]", ids.join(","))
        }
        Message::CatchUp { from_slot } => format!("catch-up from_slot={from_slot}"),
        Message::Decisions { from_slot, values } => {
            let values: Vec<String> = values.iter().map(describe).collect();
            format!("decisions from_slot={from_slot} [{}]", values.join(" "))
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_byte_and_on_order() {
        let mut a = Tracer::new(false);
        a.event(1, kind::DELIVER, 0, b"hello world");
        let mut b = Tracer::new(false);
        b.event(1, kind::DELIVER, 0, b"hello worle");
        assert_ne!(a.hash(), b.hash());
        let mut c = Tracer::new(false);
        c.event(1, kind::TIMER, 0, &[]);
        c.event(2, kind::TIMER, 1, &[]);
        let mut d = Tracer::new(false);
        d.event(2, kind::TIMER, 1, &[]);
        d.event(1, kind::TIMER, 0, &[]);
        assert_ne!(c.hash(), d.hash());
    }
}
