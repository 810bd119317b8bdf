//! The simulated network: fair-loss links (Cachin, Guerraoui and Rodrigues, "Introduction
//! to Reliable and Secure Distributed Programming", §2.4) between every ordered pair of
//! nodes, and partitions that cut some of them.
//!
//! A frame on a link is lost, duplicated, corrupted and delayed by independent coin
//! flips drawn from the seed's [`LinkParams`]. Each copy gets its own delay, so frames
//! overtake each other (reordering). A partition is a set of cut directed links; frames
//! sent on a cut link are dropped.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::FaultCounts;

/// One seed's link behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    pub loss: f64,
    pub duplication: f64,
    pub corruption: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    /// With this probability a copy takes a long-tail delay up to `tail_max_us`.
    pub tail: f64,
    pub tail_max_us: u64,
}

impl LinkParams {
    /// A clean, fast network (scenarios and the heal phase keep the seed's delays but
    /// drop every lossy fault).
    pub fn reliable(delay_min_us: u64, delay_max_us: u64) -> LinkParams {
        LinkParams {
            loss: 0.0,
            duplication: 0.0,
            corruption: 0.0,
            delay_min_us,
            delay_max_us,
            tail: 0.0,
            tail_max_us: delay_max_us,
        }
    }
}

/// Which directed links a partition cuts. Node indices are positions in the
/// configuration (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// `side` and the rest cannot talk in either direction.
    Split { side: Vec<usize> },
    /// Frames from `from` to `to` are dropped; the other direction works.
    OneWay { from: Vec<usize>, to: Vec<usize> },
    /// Omni-Paxos quorum loss: every link is cut except those of `center`, which stays
    /// connected to everyone (and is then the only quorum-connected node).
    QuorumLoss { center: usize },
    /// Omni-Paxos chained: only the link between the two ends `a` and `c` is cut.
    Chained { a: usize, c: usize },
}

impl Partition {
    /// Whether the directed link `from → to` is cut.
    pub fn cuts(&self, from: usize, to: usize) -> bool {
        if from == to {
            return false;
        }
        match self {
            Partition::Split { side } => side.contains(&from) != side.contains(&to),
            Partition::OneWay { from: sources, to: targets } => {
                sources.contains(&from) && targets.contains(&to)
            }
            Partition::QuorumLoss { center } => from != *center && to != *center,
            Partition::Chained { a, c } => (from == *a && to == *c) || (from == *c && to == *a),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names =
            |nodes: &[usize]| nodes.iter().map(|i| format!("n{}", i + 1)).collect::<Vec<_>>().join(",");
        match self {
            Partition::Split { side } => write!(f, "split {{{}}} | rest", names(side)),
            Partition::OneWay { from, to } => {
                write!(f, "one-way {{{}}} -x-> {{{}}}", names(from), names(to))
            }
            Partition::QuorumLoss { center } => write!(f, "quorum-loss around n{}", center + 1),
            Partition::Chained { a, c } => write!(f, "chained: n{} -x- n{}", a + 1, c + 1),
        }
    }
}

/// What happens to one frame.
pub(crate) struct Copy {
    pub delay_us: u64,
    pub frame: Vec<u8>,
    pub corrupted: bool,
}

/// Why a frame never left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drop {
    Partition,
    Loss,
}

pub(crate) struct Network {
    nodes: usize,
    params: LinkParams,
    /// `cut[from * nodes + to]`: the directed link is cut by the current partition.
    cut: Vec<bool>,
    partition: Option<Partition>,
}

impl Network {
    pub(crate) fn new(nodes: usize, params: LinkParams) -> Network {
        Network { nodes, params, cut: vec![false; nodes * nodes], partition: None }
    }

    pub(crate) fn partition(&self) -> Option<&Partition> {
        self.partition.as_ref()
    }

    pub(crate) fn set_partition(&mut self, partition: Partition) {
        for from in 0..self.nodes {
            for to in 0..self.nodes {
                self.cut[from * self.nodes + to] = partition.cuts(from, to);
            }
        }
        self.partition = Some(partition);
    }

    pub(crate) fn heal(&mut self) {
        self.cut.iter_mut().for_each(|cut| *cut = false);
        self.partition = None;
    }

    /// Replaces the link behaviour (the heal phase makes links reliable).
    pub(crate) fn set_params(&mut self, params: LinkParams) {
        self.params = params;
    }

    pub(crate) fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut[from * self.nodes + to]
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        let p = &self.params;
        if p.tail > 0.0 && rng.gen_bool(p.tail) {
            rng.gen_range(p.delay_max_us..=p.tail_max_us.max(p.delay_max_us))
        } else {
            rng.gen_range(p.delay_min_us..=p.delay_max_us)
        }
    }

    /// Decides the fate of one frame sent `from → to`: dropped, or one or two copies
    /// with their delays (and maybe damage).
    pub(crate) fn transmit(
        &self,
        rng: &mut ChaCha8Rng,
        from: usize,
        to: usize,
        frame: Vec<u8>,
        counts: &mut FaultCounts,
        copies: &mut Vec<Copy>,
    ) -> Result<(), Drop> {
        counts.messages_sent += 1;
        if from == to {
            // A node's messages to itself never touch the network (a real transport
            // loops them back in memory).
            copies.push(Copy { delay_us: 0, frame, corrupted: false });
            return Ok(());
        }
        if self.is_cut(from, to) {
            counts.messages_lost += 1;
            return Err(Drop::Partition);
        }
        let p = &self.params;
        if p.loss > 0.0 && rng.gen_bool(p.loss) {
            counts.messages_lost += 1;
            return Err(Drop::Loss);
        }
        let duplicate = p.duplication > 0.0 && rng.gen_bool(p.duplication);
        if duplicate {
            counts.messages_duplicated += 1;
            let delay_us = self.delay(rng);
            copies.push(self.maybe_corrupt(rng, frame.clone(), delay_us, counts));
        }
        let delay_us = self.delay(rng);
        copies.push(self.maybe_corrupt(rng, frame, delay_us, counts));
        Ok(())
    }

    fn maybe_corrupt(
        &self,
        rng: &mut ChaCha8Rng,
        mut frame: Vec<u8>,
        delay_us: u64,
        counts: &mut FaultCounts,
    ) -> Copy {
        let corrupted = self.params.corruption > 0.0 && rng.gen_bool(self.params.corruption);
        if corrupted {
            counts.messages_corrupted += 1;
            // One or two flipped bits (CRC32C detects every such error), or a cut tail
            // (the length check catches it). Three or more flips could in principle pass
            // a CRC; the wire's own tests cover single flips exhaustively.
            match rng.gen_range(0..4) {
                0 => {
                    let keep = rng.gen_range(0..frame.len());
                    frame.truncate(keep);
                }
                flips => {
                    for _ in 0..flips.min(2) {
                        let bit = rng.gen_range(0..frame.len() * 8);
                        frame[bit / 8] ^= 1 << (bit % 8);
                    }
                }
            }
        }
        Copy { delay_us, frame, corrupted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_loss_leaves_only_the_center_connected() {
        let p = Partition::QuorumLoss { center: 2 };
        for a in 0..5 {
            for b in 0..5 {
                let expected = a != b && a != 2 && b != 2;
                assert_eq!(p.cuts(a, b), expected, "{a} -> {b}");
            }
        }
    }

    #[test]
    fn one_way_cuts_one_direction_only() {
        let p = Partition::OneWay { from: vec![0], to: vec![1, 2] };
        assert!(p.cuts(0, 1) && p.cuts(0, 2));
        assert!(!p.cuts(1, 0) && !p.cuts(2, 0) && !p.cuts(1, 2));
    }
}
