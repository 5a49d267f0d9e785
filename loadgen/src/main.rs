//! loadgen: placeholder binary; the real load generator has its own issue.
fn main() {
    eprintln!("loadgen: not implemented yet");
    std::process::exit(2);
}
