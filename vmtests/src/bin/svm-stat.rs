//! svm-stat: live statistics of every bound svm_accel context, from debugfs
//! (`/sys/kernel/debug/svm_accel/ctx-N/stats`), like `xe_gt_stats` or KFD's SMI events.
//!
//! `svm-stat` prints the counters once; `svm-stat -i SECS [-n COUNT]` prints a table every
//! SECS seconds with the event counters as rates per second (COUNT tables, default forever).
//! Needs root (debugfs).

#[path = "../svmstat.rs"]
mod svmstat;

use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: svm-stat [-i SECS [-n COUNT]] [--root DIR]");
    std::process::exit(2)
}

fn main() {
    let mut interval: Option<f64> = None;
    let mut count: Option<u64> = None;
    let mut root = svmstat::ROOT.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "-i" => interval = Some(val().parse().unwrap_or_else(|_| usage())),
            "-n" => count = Some(val().parse().unwrap_or_else(|_| usage())),
            "--root" => root = val(),
            _ => usage(),
        }
    }
    let snap = |root: &str| {
        svmstat::snapshot(root).unwrap_or_else(|e| {
            eprintln!("svm-stat: {e}");
            std::process::exit(1)
        })
    };
    let Some(secs) = interval.filter(|s| *s > 0.0) else {
        print!("{}", svmstat::table(&snap(&root), None));
        return;
    };
    let mut prev = snap(&root);
    let mut t0 = Instant::now();
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs_f64(secs));
        let now = snap(&root);
        let dt = t0.elapsed().as_secs_f64();
        print!("{}", svmstat::table(&now, Some((&prev, dt))));
        println!();
        prev = now;
        t0 = Instant::now();
        n += 1;
    }
}
