//! The bootstrap cache file decoder. Random bytes almost never carry a
//! valid CRC, so the input is taken as the file's body and the CRC is
//! appended (and, on odd first bytes, the magic and version are put in
//! front): the parser behind the checksum is reached. Never a panic; what
//! decodes re-encodes to a file that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = crust::cache::decode(data);
    let mut file = Vec::new();
    if data.first().is_some_and(|b| b % 2 == 1) {
        file.extend_from_slice(b"CRSC\x01");
        file.extend_from_slice(&data[1..]);
    } else {
        file.extend_from_slice(data);
    }
    file.extend_from_slice(&crc32fast::hash(&file).to_be_bytes());
    if let Ok(entries) = crust::cache::decode(&file) {
        let again = crust::cache::encode(&entries);
        assert_eq!(crust::cache::decode(&again).unwrap(), entries);
    }
});
