//! Compile-fail tests of the board tables: each file in `tests/compile-fail` breaks
//! one rule of `transom_boards::validate`, and `check_board!` must fail the build with
//! that rule's message (the `.stderr` file beside it, compared whole by `trybuild`).
//! `tests/compile-pass` holds the unchanged sample, which must build.
//!
//! After a deliberate change of a message, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p transom-tests --test board_tables` and review
//! the diff.

#[test]
fn each_rule_fails_the_build_with_its_message() {
    let cases = trybuild::TestCases::new();
    cases.pass("compile-pass/*.rs");
    cases.compile_fail("compile-fail/*.rs");
}
