//! Network lab: `nat_check --json` behind each NAT kind, verdict asserted.
//! Run with `CRUST_LAB=1` as root (see `.ci/lab`).

mod common;
use common::*;
use netlab::lab::NatKind::{self, *};

fn nat_check(kind: NatKind) -> serde_json::Value {
    let w = world(&format!("nat_check_{kind:?}").to_lowercase());
    let site = w.lab.site("a", kind, Default::default()).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", site.host.namespace(), "timeout", "60"])
        .arg(env!("CARGO_BIN_EXE_nat_check"))
        .args(["--json", "--stun", &w.stun.to_string()])
        .output()
        .expect("run nat_check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("NAT_CHECK kind={kind:?} {text}");
    let j: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    // The UDP view of the server is the site's public address.
    let seen = j["stun_udp"][0]["seen"].as_str().unwrap().to_string();
    assert!(
        seen.starts_with(&format!("{}:", site.public_addr)),
        "{kind:?}: {j}"
    );
    let seen = j["stun_tcp"][0]["seen"].as_str().unwrap().to_string();
    assert!(
        seen.starts_with(&format!("{}:", site.public_addr)),
        "{kind:?} TCP: {j}"
    );
    j
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_nat_check_verdicts_behind_plain_kinds() {
    for (kind, verdict) in [
        (Public, "open"),
        (Easy, "easy"),
        (Hard, "hard"),
        (FullCone, "full-cone"),
    ] {
        let j = nat_check(kind);
        assert_eq!(j["verdict"], verdict, "{kind:?}: {j}");
        assert_eq!(j["upnp"]["outcome"], "none", "{kind:?}: {j}");
    }
}

#[test]
#[ignore = "network lab: needs root and CRUST_LAB=1 (see .ci/run)"]
fn lab_nat_check_verdicts_with_upnp() {
    let j = nat_check(EasyUpnp);
    assert_eq!(j["upnp"]["outcome"], "mapped", "{j}");
    assert_eq!(j["upnp"]["test_mapping_removed"], true, "{j}");
    assert_eq!(j["verdict"], "open", "{j}");
    let j = nat_check(DoubleNat);
    assert_eq!(j["upnp"]["outcome"], "refusing-gateway", "{j}");
    assert_eq!(
        j["verdict"], "easy",
        "the refused mapping is not offered: {j}"
    );
}
