//! `nat_check` parses its arguments as command-line tools do: `--help`
//! prints the help and exits 0, `--version` prints the version, a bad
//! argument is an error that names it. None of these touch the network.

use std::process::Command;

fn nat_check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nat_check"))
        .args(args)
        .output()
        .expect("nat_check runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_exits_zero_and_lists_the_options() {
    let (code, out, _) = nat_check(&["--help"]);
    assert_eq!(code, 0);
    for opt in ["--stun", "--no-igd", "--local-ip", "--json", "--version"] {
        assert!(out.contains(opt), "--help lacks {opt}:\n{out}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = nat_check(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("nat_check {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_argument_is_named() {
    let (code, _, err) = nat_check(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
    let (code, _, err) = nat_check(&["--local-ip", "not-an-ip"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not-an-ip") && err.contains("--local-ip"),
        "{err}"
    );
}
