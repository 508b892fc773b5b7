//! The granularity benchmark: `cargo run --release -p svm-tests --bin bench [-- options]`.
//!
//! Prints the machine, the commit and one table: a row per configuration (`ours`,
//! `gpusvm-like`, `test_hmm-like`: the same engine with other `range_shift` and `lock_scope`)
//! and a row per baseline with ours divided by it; then the batch-service table (a fault
//! buffer's worth of queued faults, one by one against windows). See `tests/src/bench.rs` for what each
//! column measures and `bench/RESULTS.md` for a run.
//!
//! Options:
//! - `--trials N` (7), `--fault-around N` (1), `--faults-4k N` (16384), `--faults-2m N` (256),
//!   `--tput-pages N` (32768 per thread), `--storm-pages N` (8192), `--storm-ms N` (250),
//!   `--storm-rate N` (2000 invalidating operations/s), `--sweep-rates A,B,..` (storm rates
//!   for the plot; none), `--mirror-mib N` (256), `--configs ours,gpusvm,test_hmm` (all);
//! - `--json FILE`, `--csv FILE`: also write the results there (`scripts/bench-plot.py` reads
//!   the JSON);
//! - `--with-callgrind`: fill the instruction columns by running `scripts/bench-callgrind.sh`
//!   (valgrind) on this binary;
//! - `--callgrind 4k|2m --config KEY [--faults K]`: the mode that script runs under valgrind:
//!   prepare K faults of one kind (outside the measured function), service exactly those K in
//!   `measured_faults`, and exit.
//!
//! Exits non-zero if any measurement found a problem (a failed fault, a violation, a world not
//! quiescent after teardown): the figures of a broken run are not worth printing.

use std::process::{Command, ExitCode};
use svm::Scratch;
use svm_tests::bench::{self, BenchConfig};

fn usage() -> ! {
    eprintln!(
        "usage: bench [--trials N] [--fault-around N] [--faults-4k N] [--faults-2m N] \
[--tput-pages N] [--storm-pages N] [--storm-ms N] [--storm-rate N] [--sweep-rates A,B,..] [--mirror-mib N] \
[--configs K,..] [--json FILE] [--csv FILE] [--with-callgrind]\n       \
bench --callgrind 4k|2m --config ours|gpusvm|test_hmm [--faults K] [--fault-around N]"
    );
    std::process::exit(2)
}

/// The callgrind mode: exactly `faults` faults of `kind` in `measured_faults`.
fn callgrind_mode(kind: &str, key: &str, faults: u64, fault_around: u32) -> ExitCode {
    let Some(f) = bench::flavors(fault_around)
        .into_iter()
        .find(|f| f.key == key)
    else {
        usage()
    };
    let (w, vas) = bench::prepare_faults(&f, kind, faults);
    let mut scratch = Box::new(Scratch::new());
    let t = std::time::Instant::now();
    let ok = {
        let _s = w.violations.scope();
        bench::measured_faults(&w, &mut scratch, &vas)
    };
    let ns = t.elapsed().as_nanos() as f64 / faults as f64;
    w.teardown();
    match w.check_quiescent() {
        Ok(()) if ok == faults => {
            // The time is informational (valgrind's, when run under it).
            println!("{key} {kind}: {ok} faults, {ns:.0} ns each");
            ExitCode::SUCCESS
        }
        r => {
            eprintln!("{key} {kind}: {ok} of {faults} faults; {r:?}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `scripts/bench-callgrind.sh` on this binary and fills the instruction columns.
fn with_callgrind(rows: &mut [bench::Row], fault_around: u32) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let root = env!("CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(root).join("../scripts/bench-callgrind.sh");
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bin")
        .arg(&exe)
        .arg("--fault-around")
        .arg(fault_around.to_string())
        .args(&keys)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Lines: "CALLGRIND <key> <kind> <Ir per fault> <Ir> <faults>".
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[0] != "CALLGRIND" {
            continue;
        }
        let v: f64 = f[3].parse().map_err(|_| format!("bad line {l}"))?;
        if let Some(r) = rows.iter_mut().find(|r| r.key == f[1]) {
            match f[2] {
                "4k" => r.ir_4k = Some(v),
                "2m" => r.ir_2m = Some(v),
                _ => {}
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = BenchConfig::default();
    let mut json = None;
    let mut csv = None;
    let mut callgrind = false;
    let mut cg_kind = None;
    let mut cg_config = None;
    let mut cg_faults = None;
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| -> &str {
            args.get(i + 1)
                .map(String::as_str)
                .unwrap_or_else(|| usage())
        };
        let num = |i: usize| -> u64 { val(i).parse().unwrap_or_else(|_| usage()) };
        let mut step = 2;
        match args[i].as_str() {
            "--trials" => cfg.trials = num(i).max(1) as usize,
            "--fault-around" => cfg.fault_around = num(i) as u32,
            "--faults-4k" => cfg.faults_4k = num(i).max(1),
            "--faults-2m" => cfg.faults_2m = num(i).max(1),
            "--tput-pages" => cfg.tput_pages = num(i).max(1),
            "--storm-pages" => cfg.storm_pages = num(i).max(1),
            "--storm-ms" => cfg.storm_ms = num(i).max(1),
            "--storm-rate" => cfg.storm_rate = num(i).max(1),
            "--sweep-rates" => {
                cfg.sweep_rates = val(i)
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--mirror-mib" => cfg.mirror_mib = num(i).max(2) & !1,
            "--configs" => cfg.only = val(i).split(',').map(str::to_string).collect(),
            "--json" => json = Some(val(i).to_string()),
            "--csv" => csv = Some(val(i).to_string()),
            "--with-callgrind" => {
                callgrind = true;
                step = 1;
            }
            "--callgrind" => cg_kind = Some(val(i).to_string()),
            "--config" => cg_config = Some(val(i).to_string()),
            "--faults" => cg_faults = Some(num(i).max(1)),
            _ => usage(),
        }
        i += step;
    }
    if let Some(kind) = cg_kind {
        let key = cg_config.unwrap_or_else(|| usage());
        let n = cg_faults.unwrap_or(if kind == "2m" { 64 } else { 1024 });
        return callgrind_mode(&kind, &key, n, cfg.fault_around);
    }
    if !cfg.fault_around.is_power_of_two() || cfg.fault_around > 512 {
        usage();
    }

    let (nproc, cpu, load) = bench::machine();
    println!("svm granularity benchmark (userspace model)");
    println!("machine: {nproc} CPUs, {cpu}; load average at start {load}");
    println!("commit:  {}", bench::commit());
    println!(
        "command: cargo run --release -p svm-tests --bin bench -- {}",
        args.join(" ")
    );
    println!();
    let (mut rows, sweep) = bench::run(&cfg, |p| eprintln!("bench: {p}"));
    if callgrind {
        eprintln!("bench: callgrind (valgrind; a minute or two)");
        if let Err(e) = with_callgrind(&mut rows, cfg.fault_around) {
            eprintln!("bench: callgrind: {e}");
            return ExitCode::FAILURE;
        }
    }
    print!("{}", bench::table(&rows));
    println!();
    print!("{}", bench::legend(&cfg));
    if !sweep.is_empty() {
        println!();
        println!(
            "storm-rate sweep (medians): config, ops/s target, ops/s achieved, retries/1k, faults/s, rb waits/1k"
        );
        for p in &sweep {
            println!(
                "  {:<9} {:>6} {:>8.0} {:>9.2} {:>10.0} {:>9.2}",
                p.key, p.rate, p.ops, p.retries, p.tput, p.waits
            );
        }
    }
    eprintln!("bench: batch service");
    let mut batch_problems = Vec::new();
    let batch = bench::batch_service(cfg.trials, &mut batch_problems);
    println!();
    println!(
        "batch service (ours, fault-around 16; medians of {} trials):",
        cfg.trials
    );
    print!("{}", bench::batch_table(&batch));
    let write = |path: &Option<String>, s: String| {
        if let Some(p) = path {
            if let Err(e) = std::fs::write(p, s) {
                eprintln!("bench: {p}: {e}");
                return false;
            }
        }
        true
    };
    let mut ok = write(&json, bench::json(&cfg, &rows, &sweep));
    ok &= write(&csv, bench::csv(&rows));
    for p in &batch_problems {
        eprintln!("bench: PROBLEM in batch service: {p}");
        ok = false;
    }
    for r in &rows {
        for p in &r.problems {
            eprintln!("bench: PROBLEM in {}: {p}", r.name);
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
