//! What a stranger on the network can do to a real `synod server`, and what it cannot:
//! the peer port against hellos from non-members and streams of garbage frames; the HTTP
//! port against more connections than the process has file descriptors, against
//! slowloris, and an accept loop out of descriptors. Three processes on loopback (see
//! `harness`); every wait is a poll against a deadline.

mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use harness::*;
use rand::{Rng, SeedableRng};
use synod_core::{wire, NodeId};
use synod_server::transport::Hello;

fn hello(cluster: u64, from: u32) -> Vec<u8> {
    wire::encode(cluster, &Hello { from: NodeId(from) })
}

/// Waits until the server closes `stream`; panics if it stays open for 5 s.
fn wait_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

fn connect_with_hello(addr: SocketAddr, cluster: u64, from: u32) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&hello(cluster, from)).unwrap();
    stream
}

#[test]
fn the_peer_port_refuses_strangers_and_survives_a_thousand_garbage_frames_with_a_few_log_lines() {
    let cluster = Cluster::start("peer-garbage");
    let wire_id = wire::cluster_id(&cluster.name);
    let (peer, http, log) = (cluster.nodes[0].peer, cluster.addr(0), cluster.nodes[0].log.clone());
    let warnings_before = count_lines(&log, "WARN");

    // Hellos from a non-member and from the node itself: closed and counted.
    wait_closed(&mut connect_with_hello(peer, wire_id, 9));
    wait_closed(&mut connect_with_hello(peer, wire_id, 1));

    // A thousand seeded garbage frames after a valid hello (node 2's id: nothing
    // authenticates it). Most are delimited (bad checksum, or a valid checksum around a
    // payload that is no message) and the connection goes on; every 50th is from another
    // cluster or announces more than 16 MiB, which ends the connection, and the sender
    // comes back with a new hello.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut stream = connect_with_hello(peer, wire_id, 2);
    let (mut checksum, mut decode, mut foreign, mut huge) = (0, 0, 0, 0);
    for n in 0..1000 {
        if n % 50 == 49 {
            if n % 100 == 99 {
                stream.write_all(&wire::encode(wire_id ^ 1, &[0u8; 4])).unwrap();
                foreign += 1;
            } else {
                stream.write_all(&rng.gen_range(17u32 << 20..=u32::MAX).to_le_bytes()).unwrap();
                huge += 1;
            }
            wait_closed(&mut stream);
            stream = connect_with_hello(peer, wire_id, 2);
        } else if n % 2 == 0 {
            let mut body = vec![0u8; rng.gen_range(14..200)];
            rng.fill(&mut body[..]);
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend(body);
            stream.write_all(&frame).unwrap();
            checksum += 1;
        } else {
            // Variant 127 of `Message` does not exist, whatever follows it.
            let payload: (u8, [u8; 24]) = (0x7f, rng.gen());
            stream.write_all(&wire::encode(wire_id, &payload)).unwrap();
            decode += 1;
        }
    }
    let refused =
        |reason: &str| metric(http, &format!("synod_peer_frames_refused_total{{reason=\"{reason}\"}}"));
    eventually("every garbage frame is counted", Duration::from_secs(10), || {
        let counted = [refused("checksum")?, refused("decode")?, refused("cluster")?, refused("too_large")?];
        (counted == [checksum as f64, decode as f64, foreign as f64, huge as f64]).then_some(())
    });
    let connections =
        |reason: &str| metric(http, &format!("synod_peer_connections_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!(connections("not_member"), Some(1.0));
    assert_eq!(connections("own_id"), Some(1.0));
    drop(stream);

    // The node serves on, and said so in a handful of lines, not a thousand.
    let reply = put(http, "after-garbage", "still here").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    let warnings = count_lines(&log, "WARN") - warnings_before;
    eprintln!("1,000 garbage frames, 2 refused hellos: {warnings} WARN lines");
    assert!(warnings <= 4, "{warnings} WARN lines: {}", tail(&log, 10));
}

/// A hello claiming to be a member, then one well-formed frame (right version, cluster id
/// and CRC32C) holding a Prepare whose round is the last one and whose leader is the
/// current leader. Before, every node that got it panicked ("a new leadership needs a
/// higher ballot"), no leader was elected again, and a clean restart of all three panicked
/// once more: the absurd promise was durable. Now the Prepare is refused and counted at
/// every node, leadership is undisturbed, and a restart of every node elects and serves.
#[test]
fn a_forged_prepare_with_the_last_round_is_refused_and_the_cluster_serves_on_through_a_restart() {
    let mut cluster = Cluster::start("forged-prepare");
    let wire_id = wire::cluster_id(&cluster.name);
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let liar = (leader + 1) % 3;
    let forged = synod_core::Message::<synod_core::apps::AppCommand>::Prepare {
        ballot: synod_core::Ballot { round: u64::MAX, leader: NodeId(leader as u32 + 1) },
        from_slot: 0,
    };
    for target in (0..3).filter(|&i| i != liar) {
        let mut stream = connect_with_hello(cluster.nodes[target].peer, wire_id, liar as u32 + 1);
        stream.write_all(&wire::encode(wire_id, &forged)).unwrap();
    }
    for target in (0..3).filter(|&i| i != liar) {
        let series = "synod_peer_messages_refused_total{reason=\"ballot_too_far\"}";
        eventually("the forged Prepare is refused and counted", Duration::from_secs(10), || {
            (metric(cluster.addr(target), series)? == 1.0).then_some(())
        });
    }
    assert_eq!(cluster.wait_for_leader(ELECTION_DEADLINE), leader, "leadership is undisturbed");
    let reply = put(cluster.addr(leader), "after-forgery", "1").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    for i in 0..3 {
        let round = metric(cluster.addr(i), "synod_ballot_round").expect("the ballot round");
        assert!((1.0..1000.0).contains(&round), "node {} adopted round {round}", i + 1);
    }
    // Every node restarts cleanly, elects a leader and serves.
    for i in 0..3 {
        cluster.terminate(i, Duration::from_secs(10)).expect("a clean stop");
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let reply = put(cluster.addr(leader), "after-restart", "2").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// What became of a client connection the server may be holding.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Still open, nothing received.
    Held,
    /// Answered (503) and closed.
    Answered(String),
    /// Closed without a word.
    Closed,
}

/// Looks at `stream` without waiting.
fn fate(stream: &mut TcpStream, seen: &mut Vec<u8>) -> Fate {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) if seen.is_empty() => return Fate::Closed,
            Ok(0) => return Fate::Answered(String::from_utf8_lossy(seen).into_owned()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Fate::Held,
            Err(_) if seen.is_empty() => return Fate::Closed,
            Err(_) => return Fate::Answered(String::from_utf8_lossy(seen).into_owned()),
        }
    }
}

#[test]
fn past_its_connection_cap_a_node_refuses_clients_and_keeps_its_descriptors_for_storage() {
    const NOFILE: u64 = 400;
    let env = [("SYNOD_CHECKPOINT_EVERY_SLOTS", "5"), ("SYNOD_HTTP_HEADER_TIMEOUT_MS", "5000")];
    let mut cluster = Cluster::start_with("conn-cap", &env, |c| c.nodes[0].nofile = Some(NOFILE));
    let http = cluster.addr(0);
    let cap = metric(http, "synod_http_connections_max");

    // Twice the process's whole descriptor limit, at once, saying nothing.
    let flood = 2 * NOFILE as usize;
    let mut streams: Vec<TcpStream> = (0..flood)
        .map(|n| {
            // A node that stopped accepting lets its backlog fill, and connects time out.
            TcpStream::connect_timeout(&http, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {n}: {e}: {}", tail(&cluster.nodes[0].log, 2)))
        })
        .collect();

    // Meanwhile the cluster writes on, and node 1 checkpoints (every 5 slots): it has the
    // descriptors for its files.
    for n in 0..20 {
        let reply = put(cluster.addr(1), &format!("during-flood-{n}"), "v").unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(cluster.exited(0), None, "node 1 died: {}", tail(&cluster.nodes[0].log, 5));

    // It holds exactly its cap of connections, and refused the others.
    let cap = cap.expect("the cap is a metric") as usize;
    eprintln!("open-file limit {NOFILE}: HTTP connections capped at {cap}");
    assert!(cap >= 1 && cap as u64 <= NOFILE - 256, "cap {cap}");
    let mut seen = vec![Vec::new(); flood];
    let fates = eventually("every connection past the cap is refused", Duration::from_secs(4), || {
        let fates: Vec<Fate> = streams.iter_mut().zip(&mut seen).map(|(s, seen)| fate(s, seen)).collect();
        (fates.iter().filter(|f| **f == Fate::Held).count() == cap).then_some(fates)
    });
    let answered = fates.iter().filter(|f| matches!(f, Fate::Answered(_))).count();
    eprintln!("{flood} connections: {cap} held, {answered} answered 503, the rest closed");
    for fate in &fates {
        if let Fate::Answered(reply) = fate {
            assert!(reply.starts_with("HTTP/1.1 503 ") && reply.contains("too_many_connections"), "{reply}");
        }
    }

    // The held connections are closed at the header timeout; then node 1 serves again.
    let started = Instant::now();
    eventually("the held connections are closed", Duration::from_secs(10), || {
        streams.iter_mut().zip(&mut seen).all(|(s, seen)| fate(s, seen) != Fate::Held).then_some(())
    });
    eprintln!("held connections closed {:?} after they were counted", started.elapsed());
    drop(streams);
    let reply = put(http, "after-flood", "v").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    let status = cluster.status(0).expect("node 1 answers its status");
    assert!(status["checkpoint_slot"].as_u64().is_some_and(|slot| slot >= 15), "{status}");
    assert_eq!(metric(http, "synod_http_connections_refused_total"), Some((flood - cap) as f64));
    assert_eq!(cluster.exited(0), None);
}

#[test]
fn slowloris_connections_are_closed_at_the_header_timeout_and_the_node_serves_on() {
    let cluster = Cluster::start_with_env("slowloris", &[("SYNOD_HTTP_HEADER_TIMEOUT_MS", "1000")]);
    let http = cluster.addr(0);
    let (mut streams, opened): (Vec<TcpStream>, Vec<Instant>) = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(http).unwrap();
            let opened = Instant::now();
            stream.write_all(b"GET /v1/status HTTP/1.1\r\nHost: synod\r\n").unwrap();
            (stream, opened)
        })
        .unzip();
    // How long each stayed open, from its own opening.
    let mut closed_at = vec![None; streams.len()];
    let mut seen = vec![Vec::new(); streams.len()];
    eventually("every slowloris connection is closed", Duration::from_secs(5), || {
        for (i, stream) in streams.iter_mut().enumerate() {
            if closed_at[i].is_none() && fate(stream, &mut seen[i]) != Fate::Held {
                closed_at[i] = Some(opened[i].elapsed());
            }
        }
        closed_at.iter().all(Option::is_some).then_some(())
    });
    let first = closed_at.iter().flatten().min().unwrap();
    let last = closed_at.iter().flatten().max().unwrap();
    eprintln!("200 slowloris connections, header timeout 1 s: closed after {first:?} to {last:?}");
    assert!(*first >= Duration::from_millis(900), "closed after {first:?}, before the header timeout");
    assert!(*last < Duration::from_secs(3), "the last closed after {last:?}");
    assert_eq!(metric(http, "synod_http_connections_timed_out_total{timeout=\"header\"}"), Some(200.0));
    let reply = put(http, "after-slowloris", "v").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Sets the soft open-file limit of process `pid`; returns the previous limits.
fn set_soft_nofile(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit reads `new` and writes `old`, both ours.
    let got = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

#[test]
fn a_node_out_of_descriptors_keeps_accepting_later_without_dying_or_spinning() {
    let mut cluster = Cluster::start("emfile");
    let (pid, http, peer) = (cluster.pid(0), cluster.addr(0), cluster.nodes[0].peer);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    // Four descriptors to spare, then every accept fails with EMFILE. Nothing is written
    // meanwhile, so the storage needs none.
    let old = set_soft_nofile(pid, open + 4);
    let cpu_before = cpu_time(pid);
    let clients: Vec<TcpStream> = (0..40)
        .flat_map(|_| [TcpStream::connect(http).unwrap(), TcpStream::connect(peer).unwrap()])
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(pid) - cpu_before;
    set_soft_nofile(pid, old.rlim_cur);
    drop(clients);
    eprintln!("2 s with both listeners failing to accept: {cpu:?} of CPU");
    assert!(cpu < Duration::from_millis(500), "{cpu:?} of CPU in 2 s: the accept loop spins");
    assert_eq!(cluster.exited(0), None, "the node died: {}", tail(&cluster.nodes[0].log, 5));

    cluster.wait_for_leader(ELECTION_DEADLINE);
    let reply = put(http, "after-emfile", "v").unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    for listener in ["http", "peer"] {
        let errors = metric(http, &format!("synod_accept_errors_total{{listener=\"{listener}\"}}"));
        assert!(errors.is_some_and(|n| n >= 1.0), "{listener}: {errors:?}");
    }
}

/// Large values written at once by many clients: the leader's batches and a follower's
/// forwarded chunks are bounded in bytes, not only in commands, so no Accept or Forward
/// outgrows a frame (32 values of about 1 MiB, twice a frame, sent at once through a follower
/// and the leader). Every write is acknowledged and the nodes keep serving.
///
/// Ignored for now: it fails, on a known liveness hole. Batches and forwarded chunks fit,
/// but when leadership changes while several MiB are accepted and undecided, each
/// acceptor's Promise (phase 1b) carries them all in one message, which no frame can hold;
/// the transport refuses to send it and no new leader is ever adopted. Phase 1b must be
/// chunked (the Scout asking again from the first slot a Promise left out).
#[test]
#[ignore = "phase 1b Promises are not chunked yet: a leader change with many MiB undecided wedges the group"]
fn many_large_values_at_once_stay_within_a_frame_and_every_write_is_acknowledged() {
    let cluster = Cluster::start("large-values");
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % cluster.nodes.len();
    let value = "v".repeat((1 << 20) - 1024);
    let writers: Vec<_> = (0..32)
        .map(|i| {
            let addr = cluster.addr(if i % 2 == 0 { leader } else { follower });
            let value = value.clone();
            std::thread::spawn(move || put(addr, &format!("big{i}"), &value).map(|r| r.status))
        })
        .collect();
    for (i, writer) in writers.into_iter().enumerate() {
        let status = writer.join().unwrap();
        assert!(matches!(status, Ok(200) | Ok(201) | Ok(204)), "write {i}: {status:?}");
    }
    for i in 0..cluster.nodes.len() {
        assert_eq!(cluster.nodes.len(), cluster.live().len(), "a node died");
        let read = eventually("the last value on every node", Duration::from_secs(20), || {
            read(cluster.addr(i), "big31").filter(|v| v.len() == value.len())
        });
        assert_eq!(read.len(), value.len());
    }
}
