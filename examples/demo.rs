//! Runs the EDA demo pipeline from the library: `cargo run --release --example demo [-- --quick] [OUT]`.
//!
//! Trains the built-in targets, the stage-1 draft, regenerates, selects, adapts and prints the
//! comparison table; artefacts go to `OUT` (default `eda-out`, or `eda-out-quick` with `--quick`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out =
        args.iter()
            .find(|a| !a.starts_with("--"))
            .cloned()
            .unwrap_or_else(|| if quick { "eda-out-quick".into() } else { "eda-out".into() });
    let cfg = if quick { eda::demo::DemoConfig::quick(out) } else { eda::demo::DemoConfig::new(out) };
    match eda::demo::run_demo(&cfg) {
        Ok(r) => eprintln!("done in {:.1} s", r.wall_seconds),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
