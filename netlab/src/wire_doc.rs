//! Reads the worked examples of `docs/wire.md`, so each crate's tests can
//! check them against its code and the document cannot drift.
//!
//! An example is a fenced block right after a line holding
//! `wire-example: NAME`. A hex block lists bytes as pairs of hex digits
//! separated by white space; anything after `#` on a line is a comment.
//!
//! ```
//! let doc = "wire-example: two\n```text\n01 ff  # one, then 255\n```\n";
//! assert_eq!(netlab::wire_doc::hex(doc, "two"), vec![0x01, 0xff]);
//! ```

/// The text of the fenced block after the `wire-example: name` line.
///
/// # Panics
///
/// When the document has no such example or the block is not closed: a
/// test should fail loudly then.
pub fn text(doc: &str, name: &str) -> String {
    let marker = format!("wire-example: {name}");
    let mut lines = doc.lines();
    lines
        .by_ref()
        .find(|l| {
            l.split("wire-example: ")
                .nth(1)
                .is_some_and(|rest| rest.trim_end_matches([' ', '-', '>']).trim() == name)
        })
        .unwrap_or_else(|| panic!("docs/wire.md has no `{marker}`"));
    lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("```"))
        .unwrap_or_else(|| panic!("`{marker}` is not followed by a fenced block"));
    let mut out = String::new();
    for l in lines {
        if l.trim_start().starts_with("```") {
            return out;
        }
        out.push_str(l);
        out.push('\n');
    }
    panic!("the block of `{marker}` is not closed");
}

/// The bytes of the hex block after the `wire-example: name` line.
///
/// # Panics
///
/// As [`text`], and on a token that is not two hex digits.
pub fn hex(doc: &str, name: &str) -> Vec<u8> {
    text(doc, name)
        .lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .map(|t| {
            u8::from_str_radix(t, 16)
                .ok()
                .filter(|_| t.len() == 2)
                .unwrap_or_else(|| panic!("example `{name}`: {t:?} is not a hex byte"))
        })
        .collect()
}

/// Formats bytes as the document writes them (16 to a line), for a test's
/// failure message.
pub fn format_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the example `name` is exactly `actual`, printing both in
/// the document's layout when they differ.
///
/// # Panics
///
/// When they differ (that is the point), or as [`hex`].
///
/// With `WIRE_DOC_DRAFT=1` in the environment it prints the code's bytes
/// under the example's name instead of failing, to draft a new example.
pub fn assert_hex(doc: &str, name: &str, actual: &[u8]) {
    let documented = hex(doc, name);
    if documented != actual && std::env::var_os("WIRE_DOC_DRAFT").is_some() {
        eprintln!("wire-example: {name}\n{}\n", format_hex(actual));
        return;
    }
    assert!(
        documented == actual,
        "docs/wire.md example `{name}` differs from the code.\ndocumented:\n{}\ncode:\n{}",
        format_hex(&documented),
        format_hex(actual)
    );
}
