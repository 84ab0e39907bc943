// The sample itself passes: the compile-fail tests fail for their one change.
include!("../compile-fail/shared/sample.rs");

check_board!(SAMPLE);

fn main() {}
