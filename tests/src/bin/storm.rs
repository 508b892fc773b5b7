//! The fault-storm demo: `cargo run --release -p svm-tests --bin storm [-- options]`.
//!
//! Options: `--threads N` (device threads), `--mutators N`, `--accesses N` (per device
//! thread), `--data-mib N`, `--churn-mib N`, `--seed N`, `--range-shift N`,
//! `--fault-around N`. Exits non-zero if any check failed.

use svm_tests::storm::{run, table, StormConfig};

fn main() {
    let mut cfg = StormConfig::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = || -> u64 {
            args.get(i + 1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("{} needs a number", args[i]);
                    std::process::exit(2)
                })
        };
        match args[i].as_str() {
            "--threads" => cfg.device_threads = v() as usize,
            "--mutators" => cfg.mutator_threads = v() as usize,
            "--accesses" => cfg.accesses_per_thread = v(),
            "--data-mib" => cfg.data_bytes = v() << 20,
            "--churn-mib" => cfg.churn_bytes = v() << 20,
            "--seed" => cfg.seed = v(),
            "--range-shift" => cfg.engine.range_shift = v() as u32,
            "--fault-around" => cfg.engine.fault_around_pages = v() as u32,
            "-h" | "--help" => {
                println!("usage: storm [--threads N] [--mutators N] [--accesses N] [--data-mib N] [--churn-mib N] [--seed N] [--range-shift N] [--fault-around N]");
                return;
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    println!(
        "fault storm on the model: {} device threads x {} accesses, {} mutators, {} MiB data + {} MiB churn, ranges of {} KiB, fault-around {} pages",
        cfg.device_threads,
        cfg.accesses_per_thread,
        cfg.mutator_threads,
        cfg.data_bytes >> 20,
        cfg.churn_bytes >> 20,
        (1u64 << cfg.engine.range_shift) >> 10,
        cfg.engine.fault_around_pages
    );
    let r = run(cfg);
    print!("{}", table(&r));
    if !r.clean() {
        eprintln!("storm: FAILED");
        std::process::exit(1);
    }
    println!("storm: clean");
}
