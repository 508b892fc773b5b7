//! Fault storms (release mode runs millions of checked accesses; debug runs a short one).

use svm::{Config, LockScope};
use svm_tests::storm::{run, table, StormConfig};

fn storm(cfg: StormConfig) {
    let r = run(cfg);
    println!("{}", table(&r));
    assert!(r.clean(), "storm found problems:\n{}", table(&r));
    assert!(r.engine.faults > 0 && r.own_checks > 0 && r.mutations > 0);
}

/// Accesses per device thread: the release figure, a hundredth of it in debug builds, or
/// divided by `SVM_STORM_SCALE` (cargo-mutants runs thousands of storms).
fn accesses(release: u64) -> u64 {
    let scale = std::env::var("SVM_STORM_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    match scale {
        Some(d) if d > 0 => release / d,
        _ if cfg!(debug_assertions) => release / 100,
        _ => release,
    }
}

#[test]
fn storm_default_ranges() {
    storm(StormConfig {
        accesses_per_thread: accesses(250_000),
        ..StormConfig::default()
    });
}

#[test]
fn storm_small_ranges_no_fault_around() {
    storm(StormConfig {
        accesses_per_thread: accesses(150_000),
        seed: 7,
        engine: Config {
            range_shift: 16,
            fault_around_pages: 1,
            ..Config::default()
        },
        ..StormConfig::default()
    });
}

/// test_hmm's granularity (one range over the whole address space, engine mutex): the same
/// protocol, so the same checks hold; only concurrency differs.
#[test]
fn storm_whole_address_space_range_engine_mutex() {
    storm(StormConfig {
        accesses_per_thread: accesses(100_000),
        seed: 11,
        engine: Config {
            range_shift: 47,
            lock_scope: LockScope::EngineMutex,
            ..Config::default()
        },
        ..StormConfig::default()
    });
}

/// drm_gpusvm's granularity (512 MiB ranges, engine rwsem).
#[test]
fn storm_512m_ranges_engine_rwsem() {
    storm(StormConfig {
        accesses_per_thread: accesses(100_000),
        seed: 13,
        engine: Config {
            range_shift: 29,
            lock_scope: LockScope::EngineRwsem,
            ..Config::default()
        },
        ..StormConfig::default()
    });
}

/// Device memory for a sixteenth of the data buffer: spans move to the device and back while
/// device threads check their pages, CPU touches fault device pages back, and every other
/// mutation runs; device memory runs out all the time.
#[test]
fn storm_device_memory() {
    storm(StormConfig {
        accesses_per_thread: accesses(150_000),
        seed: 11,
        devmem_pages: 256,
        exclusive: true,
        ..StormConfig::default()
    });
}
