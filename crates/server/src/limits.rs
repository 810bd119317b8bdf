//! File descriptors: how many the process may open, and how many of them clients may
//! hold. Storage needs descriptors at unpredictable times (a new log segment, a checkpoint
//! written by temp file and rename, the directory fsync), and failing to open one stops
//! the node, since a storage error is fatal. So clients get a bounded share of the limit
//! and the rest is kept for storage, peers and the process itself: a client can never
//! take the descriptors the storage needs.

use std::sync::{Mutex, OnceLock};

/// Descriptors kept out of the clients' reach for storage (segments, checkpoints, the
/// data directory and its lock) and the process (the runtime, standard streams, logs).
pub const FD_RESERVE: u64 = 256;
/// Descriptors kept per member for peer links: one outbound, and up to two inbound (see
/// `transport::INBOUND_PER_MEMBER`).
pub const FD_PER_MEMBER: u64 = 3;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, once per process (the default soft
/// limit, often 1,024, is a compatibility relic of `select(2)`, which Synod does not
/// use). Returns the soft limit in force afterwards; a limit that cannot be read counts
/// as 1,024.
pub fn raise_nofile_limit() -> u64 {
    static RAISED: OnceLock<u64> = OnceLock::new();
    *RAISED.get_or_init(|| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "cannot read the open-file limit; assuming 1024");
            return 1024;
        }
        let before = limit.rlim_cur;
        // An unlimited hard limit cannot be the soft one on Linux (it is capped by
        // fs.nr_open); a million is plenty.
        let target = if limit.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { limit.rlim_max };
        if target > before {
            let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit reads the struct we pass.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = target;
            } else {
                let error = std::io::Error::last_os_error();
                tracing::warn!(%error, soft = before, hard = limit.rlim_max, "cannot raise the open-file limit");
            }
        }
        tracing::info!(limit = limit.rlim_cur, was = before, hard = limit.rlim_max, "open-file limit");
        limit.rlim_cur
    })
}

/// Descriptors claimed so far by the nodes of this process (`synod dev` runs three).
static CLAIMED: Mutex<u64> = Mutex::new(0);

/// A node's share of the process's descriptors: its HTTP connections and its reserve.
/// Returned to the process when dropped.
#[derive(Debug)]
pub struct FdClaim {
    /// HTTP connections this node may hold at once.
    pub http_connections: usize,
    claimed: u64,
}

impl Drop for FdClaim {
    fn drop(&mut self) {
        *CLAIMED.lock().expect("fd budget lock") -= self.claimed;
    }
}

/// Claims up to `wanted` HTTP connections for a node of `members` members, out of the
/// `nofile` descriptors of the process, after the node's reserve ([`FD_RESERVE`],
/// [`FD_PER_MEMBER`] per member and `extra` more) and what other nodes of this process
/// claimed. Fails if nothing would be left for clients: the message says what to raise.
pub fn claim_http_connections(
    wanted: usize,
    members: usize,
    extra: u64,
    nofile: u64,
) -> Result<FdClaim, String> {
    let reserve = FD_RESERVE + FD_PER_MEMBER * members as u64 + extra;
    let mut claimed = CLAIMED.lock().expect("fd budget lock");
    let available = nofile.saturating_sub(*claimed).saturating_sub(reserve);
    let granted = (wanted as u64).min(available);
    if granted == 0 {
        return Err(format!(
            "the open-file limit ({nofile}) leaves no descriptor for HTTP clients once {reserve} are kept \
             for storage and peers{}; raise it (ulimit -n, or LimitNOFILE= under systemd)",
            if *claimed > 0 {
                format!(" and {} are claimed by other nodes of this process", *claimed)
            } else {
                String::new()
            }
        ));
    }
    *claimed += granted + reserve;
    Ok(FdClaim { http_connections: granted as usize, claimed: granted + reserve })
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, since the budget is process-wide and tests run in parallel.
    #[test]
    fn clients_get_what_is_left_after_the_reserve_and_other_nodes() {
        let reserve = FD_RESERVE + 3 * FD_PER_MEMBER + 32;
        let first = claim_http_connections(10_000, 3, 32, 20_000).unwrap();
        assert_eq!(first.http_connections, 10_000);
        let second = claim_http_connections(10_000, 3, 32, 20_000).unwrap();
        assert_eq!(second.http_connections as u64, 20_000 - 10_000 - 2 * reserve);
        assert!(claim_http_connections(10_000, 3, 32, 20_000).unwrap_err().contains("ulimit -n"));
        drop((first, second));
        let small = claim_http_connections(10_000, 3, 32, 400).unwrap();
        assert_eq!(small.http_connections as u64, 400 - reserve);
        drop(small);
        assert_eq!(*CLAIMED.lock().unwrap(), 0);
    }
}
