//! The granularity benchmark runs, reports every configuration and writes parsable output.
//! No timing is asserted (the figures depend on the machine): only what holds by design, such
//! as I5 for this design — an invalidation storm on other ranges never makes a fault retry.

use svm_tests::bench::{self, BenchConfig};

#[test]
fn bench_runs_small_and_reports() {
    let cfg = BenchConfig {
        trials: 1,
        faults_4k: 64,
        faults_2m: 4,
        tput_pages: 128,
        storm_pages: 256,
        storm_ms: 20,
        storm_rate: 4000,
        sweep_rates: vec![1000],
        mirror_mib: 8,
        ..BenchConfig::default()
    };
    let (rows, sweep) = bench::run(&cfg, |_| {});
    assert_eq!(rows.len(), 3);
    assert_eq!(sweep.len(), 3);
    for r in &rows {
        assert!(r.problems.is_empty(), "{}: {:?}", r.name, r.problems);
        for v in [&r.ns_4k, &r.ns_2m, &r.tput_1, &r.tput_2, &r.storm_tput] {
            assert_eq!(v.len(), 1, "{}", r.name);
            assert!(v[0] > 0.0 && v[0].is_finite(), "{}: {v:?}", r.name);
        }
        assert!(r.mem_pt > 0.0 && r.mem_ranges > 0.0 && r.mem_dma == 0.0);
    }
    let ours = &rows[0];
    assert_eq!(ours.key, "ours");
    assert_eq!(
        ours.storm_retries,
        [0.0],
        "I5: no retry for other ranges' invalidations"
    );
    assert_eq!(ours.mem_counts.0, 4, "8 MiB mirrored: four 2 MiB ranges");
    assert_eq!(rows[1].mem_counts.0, 1, "one 512 MiB range");
    assert_eq!(rows[2].mem_counts.0, 1, "one range for everything");
    let p = sweep.iter().find(|p| p.key == "ours").unwrap();
    assert_eq!(p.retries, 0.0);

    let t = bench::table(&rows);
    assert_eq!(
        t.lines().count(),
        2 + 3 + 2,
        "header, rule, 3 rows, 2 ratio rows:\n{t}"
    );
    assert!(t.contains("ours ÷ gpusvm-like") && t.contains("ours ÷ test_hmm-like"));
    let csv = bench::csv(&rows);
    assert_eq!(csv.lines().count(), 4);
    let json = bench::json(&cfg, &rows, &sweep);
    for k in [
        "\"machine\"",
        "\"commit\"",
        "\"configs\"",
        "\"sweep\"",
        "\"tput_2\"",
    ] {
        assert!(json.contains(k), "{k} in {json}");
    }
    assert!(!json.contains("NaN") && !json.contains("inf"));
}

#[test]
fn median_of_odd_even_and_none() {
    assert_eq!(bench::median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(bench::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(bench::median(&[]).is_nan());
}

/// The batch-service table: windows cut the `hmm_range_fault()` calls of dense queued faults to
/// one per window, and change nothing where the gaps are wider than a fault-around block.
#[test]
fn batch_service_runs_and_counts_calls() {
    let mut problems = Vec::new();
    let rows = bench::batch_service(1, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), 3);
    let dense = &rows[0];
    // One by one: each absent page costs a snapshot, its fault and a snapshot again.
    assert_eq!(dense.hmm_single, 3 * 256);
    assert_eq!(
        (dense.windows, dense.hmm_batch),
        (1, 1),
        "one window of 256 pages"
    );
    let sparse = &rows[2];
    assert_eq!(sparse.windows, 0);
    assert_eq!(sparse.hmm_batch, sparse.hmm_single);
    assert_eq!(bench::batch_table(&rows).lines().count(), 2 + 3);
}
