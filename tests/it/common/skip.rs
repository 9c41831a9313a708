//! The one way a test skips: a test that needs what a machine may lack
//! (root, pebble, systemd's tools) returns early without it, after a line
//! on the terminal that says which test and what it needs; under
//! `CI=true` a skip is a failure instead, so CI runs every test.

use std::io::Write;

/// `have`, after saying that `test` is skipped for want of `needs` when
/// not, or failing under `CI=true`.
pub fn unless(have: bool, test: &str, needs: &str) -> bool {
    if have {
        return true;
    }
    let why = format!("SKIPPED {test}: it needs {needs}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}, and under CI=true nothing may be skipped");
    }
    // Straight to stderr: the harness captures `eprintln!` of a test that
    // passes, and this line is for the person running the tests.
    let _ = writeln!(std::io::stderr(), "{why}");
    false
}
