//! `Service::new()` on a fresh machine: no file needed, the identity is
//! created in the data directory (`CRUST_DATA_DIR` here, so the test never
//! touches the real home) with owner-only permissions and kept across
//! restarts; `CRUST_CONFIG` names the config file. (Its own test binary:
//! it sets process-wide environment variables.)

use std::os::unix::fs::PermissionsExt;

use crust::Service;

#[test]
fn service_new_uses_the_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("crust.json");
    // Loopback only: the default config would beacon on every interface.
    std::fs::write(
        &config,
        r#"{
  "listen": ["tcp://127.0.0.1:0", "utp://127.0.0.1:0"],
  "network_name": "default-location",
  "beacon": { "interfaces": ["lo"], "port": 47123 },
  "igd": false,
  "mapping_local_ip": "127.0.0.1"
}"#,
    )
    .unwrap();
    // SAFETY: this test binary has one test and sets the variables before
    // any other thread reads the environment.
    unsafe {
        std::env::set_var(crust::DATA_DIR_ENV, &data);
        std::env::set_var(crust::CONFIG_ENV, &config);
    }
    let first = Service::new().unwrap();
    let key = first.controller.public_key();
    assert_eq!(first.controller.network_name(), "default-location");
    let id = data.join(crust::IDENTITY_FILE_NAME);
    let mode = std::fs::metadata(&id).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(first);
    let second = Service::new().unwrap();
    assert_eq!(second.controller.public_key(), key);
    drop(second);
    // A config file that does not exist is an error naming it.
    unsafe { std::env::set_var(crust::CONFIG_ENV, dir.path().join("nope.json")) };
    let e = Service::new().unwrap_err().to_string();
    assert!(e.contains("nope.json"), "{e}");
}
