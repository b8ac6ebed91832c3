use std::time::Instant;
use rusqlite::Connection;
use state_store::StateStore;
use sync_core::plan::{Refresh, SnapshotIndex};
use sync_core::ports::{ContactRef, SnapshotStore};
use sync_core::IdentifierKind;

#[test]
#[ignore]
fn exp() {
    let path = std::path::Path::new("/tmp/sbench/state.db");
    if !path.exists() {
        let mut store = StateStore::open(path).unwrap();
        for chunk in (0..2_000_000usize).collect::<Vec<_>>().chunks(100_000) {
            let r: Vec<Refresh> = chunk.iter().map(|&i| { let key = format!("customer.{i:08}@example.com"); Refresh { key_hash: sync_core::fingerprint::key_hash(IdentifierKind::Email, &key), contact: ContactRef { kind: IdentifierKind::Email, key }, row_fingerprint: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 2 | 1 } }).collect();
            store.apply_refreshes("bench", 1, &r).unwrap();
        }
    }
    let store = StateStore::open(path).unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let mut idx = SnapshotIndex::default();
        store.load_index("bench", &mut idx).unwrap();
        println!("load_index {:?}", t.elapsed());
    }
    let conn = Connection::open(path).unwrap();
    for mmap in [0i64, 1 << 30] {
        conn.pragma_update(None, "mmap_size", mmap).unwrap();
        for cache in [-2000i64, -64000] {
            conn.pragma_update(None, "cache_size", cache).unwrap();
            let t = Instant::now();
            let n: i64 = conn.query_row("SELECT count(*) FROM snapshot_contacts INDEXED BY snapshot_contacts_index WHERE activation_id = 1", [], |r| r.get(0)).unwrap();
            let tc = t.elapsed();
            let t = Instant::now();
            let mut stmt = conn.prepare("SELECT key_hash, row_fingerprint FROM snapshot_contacts INDEXED BY snapshot_contacts_index WHERE activation_id = 1").unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut x = 0u64;
            while let Some(r) = rows.next().unwrap() { let a: i64 = r.get(0).unwrap(); let b: i64 = r.get(1).unwrap(); x ^= (a ^ b) as u64; }
            drop(rows);
            let ts = t.elapsed();
            let t = Instant::now();
            let mut idx = SnapshotIndex::with_capacity(n as usize);
            let mut rows = stmt.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() { let a: i64 = r.get(0).unwrap(); let b: i64 = r.get(1).unwrap(); idx.insert(a as u64, b as u64); }
            let ti = t.elapsed();
            println!("mmap {mmap} cache {cache}: count {tc:?} scan {ts:?} scan+insert {ti:?} ({x})");
        }
    }
    let sz: i64 = conn.query_row("SELECT sum(pgsize) FROM dbstat WHERE name='snapshot_contacts_index'", [], |r| r.get(0)).unwrap_or(-1);
    let sz2: i64 = conn.query_row("SELECT sum(pgsize) FROM dbstat WHERE name='snapshot_contacts'", [], |r| r.get(0)).unwrap_or(-1);
    println!("index bytes {sz} table bytes {sz2}");
}
