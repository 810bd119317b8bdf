//! Log appends on this machine's disk: group commit (many appends, one fdatasync) versus
//! one fdatasync per record. Records are ~300-byte accepted pvalues, as a Multi-Paxos
//! acceptor writes them. Each mode runs for a bounded time and record count.
//!
//! `cargo bench -p synod-storage` prints a table; the scratch directory is under Cargo's
//! target directory (the real disk, not a tmpfs) and is removed afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use synod_core::{Ballot, Command, NodeId, PValue, Record, Value};
use synod_storage::{FileStorage, Storage, StorageOptions};

/// Each mode stops after this long or this many records, whichever comes first.
const MODE_DURATION_MAX: Duration = Duration::from_secs(4);
const MODE_RECORDS_MAX: u64 = 400_000;

fn record(slot: u64) -> Record<Vec<u8>> {
    let op = vec![(slot % 251) as u8; 256];
    let command = Command { client_id: slot % 1000, seq: slot, op };
    Record::Accepted {
        pvalue: PValue {
            ballot: Ballot { round: 7, leader: NodeId(1) },
            slot,
            value: Value::Batch(vec![command]),
        },
    }
}

struct Row {
    name: String,
    records: u64,
    syncs: u64,
    seconds: f64,
    bytes: u64,
    sync_mean_micros: f64,
}

/// Appends `per_sync` records (as `per_sync` separate appends, like the driver's
/// readies, or one batch if `one_batch`) then syncs, until the bounds are reached.
fn run(root: &Path, name: &str, per_sync: u64, one_batch: bool) -> Row {
    let dir = root.join(name.replace(' ', "-"));
    let (mut storage, _) = FileStorage::<Vec<u8>>::open(&dir, StorageOptions::default()).expect("open");
    let before = storage.stats();
    let started = Instant::now();
    let mut slot = 0;
    while started.elapsed() < MODE_DURATION_MAX && slot < MODE_RECORDS_MAX {
        if one_batch {
            let batch: Vec<_> = (slot..slot + per_sync).map(record).collect();
            storage.append(&batch).expect("append");
        } else {
            for s in slot..slot + per_sync {
                storage.append(&[record(s)]).expect("append");
            }
        }
        slot += per_sync;
        storage.sync().expect("sync");
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = storage.stats();
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
    let syncs = stats.wal_syncs - before.wal_syncs;
    Row {
        name: name.to_string(),
        records: slot,
        syncs,
        seconds,
        bytes: stats.bytes_appended - before.bytes_appended,
        sync_mean_micros: (stats.wal_sync_nanos_total - before.wal_sync_nanos_total) as f64
            / syncs.max(1) as f64
            / 1e3,
    }
}

fn main() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("scratch directory");
    println!("record: accepted pvalue, {} bytes framed", {
        let mut probe = Vec::new();
        probe = postcard::to_extend(&record(1), probe).expect("encode");
        probe.len() + 20
    });
    let rows = vec![
        run(&root, "1 record per fdatasync", 1, false),
        run(&root, "64 appends per fdatasync", 64, false),
        run(&root, "512 appends per fdatasync", 512, false),
        run(&root, "512-record batch per fdatasync", 512, true),
    ];
    let _ = std::fs::remove_dir_all(&root);
    let baseline = rows[0].records as f64 / rows[0].seconds;
    println!(
        "{:<32} {:>9} {:>8} {:>12} {:>9} {:>13} {:>8}",
        "mode", "records", "fsyncs", "records/s", "MB/s", "fsync mean µs", "speedup"
    );
    for row in &rows {
        let rate = row.records as f64 / row.seconds;
        println!(
            "{:<32} {:>9} {:>8} {:>12.0} {:>9.2} {:>13.0} {:>7.1}x",
            row.name,
            row.records,
            row.syncs,
            rate,
            row.bytes as f64 / row.seconds / 1e6,
            row.sync_mean_micros,
            rate / baseline
        );
    }
}
