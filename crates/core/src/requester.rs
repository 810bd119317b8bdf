//! The Requester (seed 003): the client side of a node. It remembers the command each
//! attached client waits for, hands it to the leader, and resends it — to whichever node
//! leads by then — until the command is applied here. Resending is safe because sessions
//! make a command apply once however often it is decided.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::effects::Rejection;
use crate::replica::command_digest;
use crate::types::{ClientId, Command, Time};

#[derive(Debug)]
struct Pending<C> {
    command: Command<C>,
    /// The command's [`command_digest`]: an applied command under the same pair answers
    /// this client only if it is this command.
    digest: u64,
    /// When the command was last handed to a leader; `None` while no leader is known.
    sent_at: Option<Time>,
}

#[derive(Debug)]
pub struct Requester<C> {
    /// A client has at most one command outstanding (its session's next `seq`).
    pending: BTreeMap<ClientId, Pending<C>>,
    pending_max: usize,
}

impl<C: Clone> Requester<C> {
    pub fn new(pending_max: usize) -> Self {
        Requester { pending: BTreeMap::new(), pending_max }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Registers a client's command. A new `seq` replaces the client's previous one
    /// (the client gave up on it); the same `seq` with the same command again is a retry.
    /// The same `seq` with a different command while the first is still pending is a
    /// reused pair: refused with `SessionConflict` at once and never proposed, since the
    /// pair already names the pending command (whichever of the two the log took first,
    /// the other could only be the conflict).
    pub fn invoke(&mut self, command: Command<C>) -> Result<(), Rejection>
    where
        C: Serialize,
    {
        if !self.pending.contains_key(&command.client_id) && self.pending.len() >= self.pending_max {
            return Err(Rejection::Busy);
        }
        let digest = command_digest(&command.op);
        match self.pending.get(&command.client_id) {
            Some(p) if p.command.seq > command.seq => Err(Rejection::SessionExpired),
            Some(p) if p.command.seq == command.seq && p.digest != digest => Err(Rejection::SessionConflict),
            _ => {
                self.pending.insert(command.client_id, Pending { command, digest, sent_at: None });
                Ok(())
            }
        }
    }

    /// Commands due for (re)sending: never sent, or sent `retry_us` ago without a reply.
    /// Marks them sent at `now`.
    pub fn due(&mut self, now: Time, retry_us: u64) -> Vec<Command<C>> {
        let mut due = Vec::new();
        for pending in self.pending.values_mut() {
            let stale = pending.sent_at.is_none_or(|at| now.saturating_sub(at) >= retry_us);
            if stale {
                pending.sent_at = Some(now);
                due.push(pending.command.clone());
            }
        }
        due
    }

    /// Forget when each command was sent, so the next `due` resends all (a new leader).
    pub fn reset(&mut self) {
        for pending in self.pending.values_mut() {
            pending.sent_at = None;
        }
    }

    /// The command `(client_id, seq)` with this `digest` was applied (or rejected); true if
    /// a client here waited for it. A different command under the same pair (sent to
    /// another node) does not answer the one waiting here: that one stays pending until
    /// the log decides it too, and its own outcome (a conflict) is what its client hears.
    pub fn complete(&mut self, client_id: ClientId, seq: u64, digest: u64) -> bool {
        if self.pending.get(&client_id).is_some_and(|p| p.command.seq == seq && p.digest == digest) {
            self.pending.remove(&client_id);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client_id: ClientId, seq: u64) -> Command<()> {
        Command { client_id, seq, op: () }
    }

    #[test]
    fn requester_resends_only_after_the_retry_interval() {
        let mut requester = Requester::new(10);
        requester.invoke(cmd(1, 1)).unwrap();
        assert_eq!(requester.due(Time(0), 100).len(), 1);
        assert_eq!(requester.due(Time(50), 100).len(), 0);
        assert_eq!(requester.due(Time(100), 100).len(), 1);
        assert!(requester.complete(1, 1, command_digest(&())));
        assert!(requester.is_empty());
    }

    #[test]
    fn requester_refuses_new_clients_when_full() {
        let mut requester = Requester::new(1);
        requester.invoke(cmd(1, 1)).unwrap();
        assert_eq!(requester.invoke(cmd(2, 1)), Err(Rejection::Busy));
        // The same client moving on is not a new entry.
        assert_eq!(requester.invoke(cmd(1, 2)), Ok(()));
    }

    fn op(client_id: ClientId, seq: u64, op: u64) -> Command<u64> {
        Command { client_id, seq, op }
    }

    #[test]
    fn a_different_command_under_a_pending_pair_is_refused_and_the_first_stays() {
        let mut requester = Requester::new(10);
        requester.invoke(op(1, 1, 5)).unwrap();
        assert_eq!(requester.invoke(op(1, 1, 5)), Ok(()), "the same command again is a retry");
        assert_eq!(requester.invoke(op(1, 1, 6)), Err(Rejection::SessionConflict));
        let due = requester.due(Time(0), 100);
        assert_eq!(due, vec![op(1, 1, 5)], "the first command is still the one to send");
    }

    #[test]
    fn only_the_pending_command_itself_completes_its_client() {
        let mut requester = Requester::new(10);
        requester.invoke(op(1, 1, 6)).unwrap();
        // Another node's client applied command 5 under the same pair first: it is not
        // the answer for the client waiting here on command 6.
        assert!(!requester.complete(1, 1, command_digest(&5u64)));
        assert_eq!(requester.len(), 1);
        assert!(requester.complete(1, 1, command_digest(&6u64)));
        assert!(requester.is_empty());
    }
}
