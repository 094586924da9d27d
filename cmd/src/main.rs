//! `circles_orchestrator`: runs every circle of a circles.json.

fn main() {
    eprintln!("circles_orchestrator is not built yet");
    std::process::exit(1);
}
