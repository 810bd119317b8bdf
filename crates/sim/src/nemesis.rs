//! The nemesis: crashes, pauses and partitions during the fault phase, and the heal.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::disk::DiskFault;
use crate::faults::{draw_partition, pick_target};
use crate::network::{LinkParams, Partition};
use crate::workload::{Cmd, Workload};
use crate::world::{CrashTrap, Ev, Input, Phase, Pivot, World};

impl<W: Workload> World<W> {
    pub(crate) fn set_partition(&mut self, partition: Partition) {
        self.trace_line(|| format!("nemesis: partition {partition}"));
        self.faults.partitions += 1;
        self.net.set_partition(partition);
        self.partition_token += 1;
    }

    pub(crate) fn heal_partition(&mut self) {
        self.trace_line(|| "nemesis: heal partition".to_string());
        self.net.heal();
        self.partition_token += 1;
    }

    /// Crashes node `i`: the process and everything not yet synced are gone (but for a
    /// torn write's prefix, on seeds that tear).
    pub(crate) fn crash(&mut self, i: usize) {
        let slot = &mut self.nodes[i];
        slot.node = None;
        let torn = self.params.torn_writes.then_some(&mut self.rng_storage);
        let loss = slot.disk.crash(torn);
        slot.waiting.clear();
        slot.snapshots_seen = 0;
        slot.persisted_told = 0;
        slot.lease_reads.clear();
        slot.inbox.clear();
        slot.paused = None;
        slot.incarnation += 1;
        slot.timer_at_us = None;
        slot.was_leader = false;
        self.faults.crashes += 1;
        self.faults.records_lost += loss.lost;
        if loss.kept > 0 && loss.lost > 0 {
            self.faults.torn_writes += 1;
        }
        self.trace_line(|| {
            format!(
                "nemesis: crash n{} ({} unsynced records lost, {} kept by a torn write)",
                i + 1,
                loss.lost,
                loss.kept
            )
        });
    }

    pub(crate) fn pause(&mut self, i: usize) -> u64 {
        self.pause_token += 1;
        self.nodes[i].paused = Some(self.pause_token);
        self.faults.pauses += 1;
        self.trace_line(|| format!("nemesis: pause n{}", i + 1));
        self.pause_token
    }

    pub(crate) fn resume(&mut self, i: usize) {
        self.trace_line(|| format!("nemesis: resume n{}", i + 1));
        self.nodes[i].paused = None;
        self.release_synced(i);
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for input in inbox {
            if self.nodes[i].node.is_none() {
                break; // Crashed meanwhile: the rest of the inbox is gone with it.
            }
            match input {
                Input::Message { from, frame } => self.deliver(i, from, frame),
                Input::Request(command) => self.invoke(i, command),
            }
        }
        self.nodes[i].timer_at_us = None;
        self.arm_timer(i);
    }

    /// The pivot fault, a partition and a crash timed together to make a lost vote
    /// count. The leader gets a bare majority (itself, the pivot and f−1 others); the
    /// pivot crashes right after its next vote (inside the fsync window); then the pivot
    /// moves to the other side, where it and the f nodes that never saw the leader's
    /// proposals form a majority without the leader. A correct node's vote survives the
    /// crash and the new leader learns it in phase 1; a vote that was sent but not
    /// durable is gone, and a second value can be chosen.
    ///
    /// Half the time the pivot is the leader itself: its own vote is the one at stake
    /// (its Accepts leave before that vote is durable), and after the crash it joins the
    /// f nodes that never saw its proposals, to form a majority without its followers.
    pub(crate) fn start_pivot(&mut self, leader: usize) {
        let n = self.nodes.len();
        let mut others: Vec<usize> = (0..n)
            .filter(|&i| i != leader && self.nodes[i].node.is_some() && self.nodes[i].crash_trap.is_none())
            .collect();
        others.shuffle(&mut self.rng_nemesis);
        let quorum = n / 2 + 1;
        if others.len() < quorum - 1 {
            return;
        }
        let pivot = if self.rng_nemesis.gen_bool(0.5) { leader } else { others[0] };
        let mut side: Vec<usize> = others[..quorum - 1].to_vec();
        side.push(leader);
        side.sort_unstable();
        self.set_partition(Partition::Split { side: side.clone() });
        let down_us = self.rng_nemesis.gen_range(10_000..=300_000);
        let late = self.rng_nemesis.gen_bool(self.params.crash_late_in_window);
        self.nodes[pivot].crash_trap = Some(CrashTrap { down_us, late });
        self.trace_line(|| format!("nemesis: pivot n{} will crash inside its next fsync window", pivot + 1));
        self.pivot = Some(Pivot { node: pivot, side, token: self.partition_token });
    }

    /// The pivot crashed: it changes sides.
    pub(crate) fn flip_pivot(&mut self, crashed: usize) {
        let Some(pivot) = self.pivot.take_if(|p| p.node == crashed) else { return };
        if pivot.token != self.partition_token {
            return; // That partition healed meanwhile.
        }
        let side: Vec<usize> = pivot.side.into_iter().filter(|&i| i != crashed).collect();
        self.set_partition(Partition::Split { side });
        let at = self.now_us + self.rng_nemesis.gen_range(100_000..=1_000_000);
        let token = self.partition_token;
        self.push(at, Ev::Heal { token });
    }

    pub(crate) fn restart(&mut self, i: usize) {
        if self.phase == Phase::Faults && self.rng_storage.gen_bool(self.params.disk_fault) {
            self.strike_disk(i);
        }
        self.trace_line(|| format!("nemesis: restart n{}", i + 1));
        self.boot(i);
    }

    /// A disk fault on node `i`, which is down. **Placement:** only while no *other* node
    /// is damaged and not yet repaired, so a majority always keeps a good copy of every
    /// record and every violation the checkers find is a real bug. (A repaired node is a
    /// good copy again: it decided every slot its lost votes could have helped choose.)
    pub(crate) fn strike_disk(&mut self, i: usize) {
        assert!(self.nodes[i].node.is_none(), "disk faults strike only a node that is down");
        if (0..self.nodes.len()).any(|j| j != i && self.nodes[j].disk.damaged()) {
            return;
        }
        // A node the operator took out of service lost its disk for good: until the run
        // ends, no other disk may fail (its copies may be the only ones left besides it).
        if self.operator.as_ref().is_some_and(|o| o.retired_any()) {
            return;
        }
        let fault = *DiskFault::ALL.choose(&mut self.rng_storage).expect("three kinds");
        if !self.nodes[i].disk.strike(fault, &mut self.rng_storage) {
            return; // Nothing there to damage (an empty log, no checkpoint).
        }
        match fault {
            DiskFault::LogDamage => self.faults.log_damage += 1,
            DiskFault::CheckpointLost => self.faults.checkpoints_lost += 1,
            DiskFault::DiskLost => self.faults.disks_lost += 1,
        }
        self.trace_line(|| format!("nemesis: disk fault on n{}: {fault:?}", i + 1));
    }

    pub(crate) fn nemesis(&mut self, ev: Ev<Cmd<W>>) {
        let n = self.nodes.len();
        let down = (0..n)
            .filter(|&i| !self.is_out(i))
            .map(|i| &self.nodes[i])
            .filter(|s| s.node.is_none() || s.paused.is_some() || s.crash_trap.is_some())
            .count();
        match ev {
            Ev::Crash | Ev::Pause if self.phase != Phase::Faults => {}
            Ev::Partition if self.phase != Phase::Faults => {}
            Ev::Crash => {
                let rate = self.params.crash.expect("scheduled only when enabled");
                let candidates: Vec<usize> = (0..n)
                    .filter(|&i| self.nodes[i].node.is_some() && self.nodes[i].crash_trap.is_none())
                    .collect();
                if down < self.params.down_max {
                    let leader = self.leader();
                    if let Some(i) = pick_target(&mut self.rng_nemesis, &self.params, leader, &candidates) {
                        let down_us = rate.duration(&mut self.rng_nemesis);
                        if self.rng_nemesis.gen_bool(self.params.crash_in_fsync_window) {
                            self.nodes[i].crash_trap = Some(CrashTrap { down_us, late: false });
                            self.trace_line(|| {
                                format!("nemesis: n{} will crash inside its next fsync window", i + 1)
                            });
                        } else {
                            self.crash(i);
                            let incarnation = self.nodes[i].incarnation;
                            self.push(self.now_us + down_us, Ev::Restart { node: i, incarnation });
                        }
                    }
                }
                let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
                self.push(at, Ev::Crash);
            }
            Ev::Pause => {
                let rate = self.params.pause.expect("scheduled only when enabled");
                let candidates: Vec<usize> = (0..n)
                    .filter(|&i| self.nodes[i].node.is_some() && self.nodes[i].paused.is_none())
                    .collect();
                if down < self.params.down_max {
                    let leader = self.leader();
                    if let Some(i) = pick_target(&mut self.rng_nemesis, &self.params, leader, &candidates) {
                        let token = self.pause(i);
                        let at = self.now_us + rate.duration(&mut self.rng_nemesis);
                        self.push(at, Ev::Resume { node: i, token });
                    }
                }
                let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
                self.push(at, Ev::Pause);
            }
            Ev::Partition => {
                let rate = self.params.partition.expect("scheduled only when enabled");
                if self.net.partition().is_none() {
                    let leader = self.leader();
                    let pivot = down < self.params.down_max && self.rng_nemesis.gen_bool(self.params.pivot);
                    match leader {
                        Some(leader) if pivot => self.start_pivot(leader),
                        _ => {
                            let partition = draw_partition(&mut self.rng_nemesis, n, leader);
                            self.set_partition(partition);
                        }
                    }
                    let at = self.now_us + rate.duration(&mut self.rng_nemesis);
                    let token = self.partition_token;
                    self.push(at, Ev::Heal { token });
                }
                let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
                self.push(at, Ev::Partition);
            }
            Ev::CrashNow { node, incarnation, down_us } => {
                if self.phase == Phase::Faults
                    && self.nodes[node].node.is_some()
                    && self.nodes[node].incarnation == incarnation
                {
                    self.crash(node);
                    let incarnation = self.nodes[node].incarnation;
                    self.push(self.now_us + down_us, Ev::Restart { node, incarnation });
                    self.flip_pivot(node);
                }
            }
            Ev::Restart { node, incarnation } => {
                if self.nodes[node].node.is_none()
                    && self.nodes[node].incarnation == incarnation
                    && !self.is_retired(node)
                {
                    self.restart(node);
                }
            }
            Ev::Resume { node, token } => {
                if self.nodes[node].node.is_some() && self.nodes[node].paused == Some(token) {
                    self.resume(node);
                }
            }
            Ev::Heal { token } => {
                if self.partition_token == token {
                    self.heal_partition();
                }
            }
            _ => unreachable!("not a nemesis event"),
        }
    }

    /// The end of the fault phase: everything heals and no new operation starts.
    pub(crate) fn heal_all(&mut self) {
        self.phase = Phase::Heal;
        self.trace_line(|| "phase: heal (restart, resume, reconnect; links reliable)".to_string());
        self.pivot = None;
        self.revive_members();
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_trap = None;
            if self.is_out(i) || self.is_retired(i) {
                continue; // An unused spare, or a node removed from the group.
            }
            if self.nodes[i].node.is_none() {
                self.restart(i);
            } else if self.nodes[i].paused.is_some() {
                self.resume(i);
            }
        }
        if self.net.partition().is_some() {
            self.heal_partition();
        }
        let link = &self.params.link;
        self.net.set_params(LinkParams::reliable(link.delay_min_us, link.delay_max_us));
    }
}
