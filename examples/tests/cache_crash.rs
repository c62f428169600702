//! A process killed with SIGKILL while writing the bootstrap cache in a
//! loop (200 kills at random moments) always leaves a file that parses: the
//! old generation or the new one, never a torn one.

use std::process::Command;
use std::time::Duration;

#[test]
fn sigkill_never_leaves_a_torn_cache() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.cache");
    let mut seed = std::process::id() as u64 | 1;
    let mut last_gen_seen = Vec::new();
    for round in 0..200 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cache_stress"))
            .arg(&file)
            .spawn()
            .unwrap();
        // A random moment: 0 to 15 ms after the start (xorshift).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 15_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !file.exists() {
            // Killed before its first rename: nothing to check yet.
            continue;
        }
        let entries = crust::cache::read_file(&file)
            .unwrap_or_else(|e| panic!("round {round}: the cache is torn: {e}"));
        let key = entries[0].public_key.as_bytes()[0];
        assert!(entries.iter().all(|e| e.public_key.as_bytes()[0] == key));
        // Generation g has g % 7 + 1 entries and key byte g % 256.
        assert!(!entries.is_empty() && entries.len() <= 7, "round {round}");
        last_gen_seen.push(key);
        // Temp files of killed writers may be left behind; never the file.
    }
    assert!(
        last_gen_seen.len() >= 100,
        "the writer was killed before its first write too often ({} of 200 checked)",
        last_gen_seen.len()
    );
}
