//! The example programs parse their arguments with clap: `--help` exits 0,
//! `--version` works, a bad argument is named. No network is touched.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lan_peers_and_bulk_transfer_help_version_and_bad_arguments() {
    for (bin, opt) in [
        (env!("CARGO_BIN_EXE_lan_peers"), "--interface"),
        (env!("CARGO_BIN_EXE_bulk_transfer"), "listen"),
    ] {
        let (code, out, _) = run(bin, &["--help"]);
        assert_eq!(code, 0, "{bin} --help");
        assert!(out.contains(opt), "{bin} --help lacks {opt}:\n{out}");
        let (code, out, _) = run(bin, &["--version"]);
        assert_eq!(code, 0, "{bin} --version");
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
        let (code, _, err) = run(bin, &["--frobnicate"]);
        assert_eq!(code, 2, "{bin} --frobnicate");
        assert!(err.contains("--frobnicate"), "{err}");
    }
}
