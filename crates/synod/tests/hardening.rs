//! What a stranger on the network can do to a real `synod server`, and what it cannot:
//! the peer port against hellos from non-members and streams of garbage frames.
//! Three processes on loopback (see `harness`); every wait is a poll against a deadline.

mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
