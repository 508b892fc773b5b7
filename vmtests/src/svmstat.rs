//! svm-stat's core (`src/bin/svm-stat.rs`), shared with the in-VM test `debugfs`: reads every
//! context's `/sys/kernel/debug/svm_accel/{ctx,dm}-N/stats` (accel and dmirror files; one
//! `name value` line per counter, `unbound` before BIND, `unplugged` after an unplug) and
//! prints a table, with rates per second against an earlier snapshot.

use std::collections::BTreeMap;

/// Where the driver's debugfs directory is.
pub const ROOT: &str = "/sys/kernel/debug/svm_accel";

/// One context's counters.
pub type Stats = BTreeMap<String, u64>;

/// Parses a `stats` file: `None` for an unbound context.
pub fn parse(text: &str) -> Result<Option<Stats>, String> {
    if matches!(text.trim(), "unbound" | "unplugged") {
        return Ok(None);
    }
    let mut s = Stats::new();
    for l in text.lines() {
        let (k, v) = l
            .split_once(' ')
            .ok_or_else(|| format!("stats line without a value: {l:?}"))?;
        let v = v
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("stats line {l:?}: {e}"))?;
        s.insert(k.to_string(), v);
    }
    Ok(Some(s))
}

/// Every bound context under `root`, by directory name (sorted).
pub fn snapshot(root: &str) -> Result<BTreeMap<String, Stats>, String> {
    let mut out = BTreeMap::new();
    let dir = std::fs::read_dir(root)
        .map_err(|e| format!("{root}: {e} (debugfs mounted? module loaded?)"))?;
    for e in dir {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ctx-") && !name.starts_with("dm-") {
            continue;
        }
        // A context may close between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(e.path().join("stats")) else {
            continue;
        };
        if let Some(s) = parse(&text)? {
            out.insert(name, s);
        }
    }
    Ok(out)
}

/// The columns: (header, counter, shown as a rate per second when there is an earlier
/// snapshot).
const COLUMNS: &[(&str, &str, bool)] = &[
    ("ranges", "ranges", false),
    ("4K leaves", "pt_pages", false),
    ("2M leaves", "pt_huge", false),
    ("DMA live", "dma_live", false),
    ("faults", "faults", true),
    ("errors", "fault_errors", true),
    ("retries", "retries_foreign", true),
    ("invalidations", "invalidations", true),
    ("TLB misses", "tlb_misses", true),
    ("GC removed", "gc_removed", true),
    ("queue jobs", "queue_jobs", true),
    ("acct errors", "accounting_errors", false),
];

/// The table of `now`; with `prev` (an earlier snapshot, `secs` before), counters marked as
/// rates are shown per second.
pub fn table(
    now: &BTreeMap<String, Stats>,
    prev: Option<(&BTreeMap<String, Stats>, f64)>,
) -> String {
    let mut rows = vec![std::iter::once("context".to_string())
        .chain(COLUMNS.iter().map(|(h, _, rate)| {
            if *rate && prev.is_some() {
                format!("{h}/s")
            } else {
                h.to_string()
            }
        }))
        .collect::<Vec<_>>()];
    for (name, s) in now {
        let mut row = vec![name.clone()];
        for (_, key, rate) in COLUMNS {
            let v = s.get(*key).copied().unwrap_or(0);
            let cell = match prev {
                Some((p, secs)) if *rate && secs > 0.0 => {
                    let before = p.get(name).and_then(|p| p.get(*key)).copied().unwrap_or(0);
                    format!("{:.0}", v.saturating_sub(before) as f64 / secs)
                }
                _ => v.to_string(),
            };
            row.push(cell);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c == 0 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if now.is_empty() {
        out.push_str("(no bound context)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_rates() {
        assert_eq!(parse("unbound\n").unwrap(), None);
        assert!(parse("faults x\n").is_err());
        let a = parse("faults 10\nranges 2\n").unwrap().unwrap();
        let b = parse("faults 30\nranges 3\n").unwrap().unwrap();
        let prev: BTreeMap<String, Stats> = [("ctx-0".to_string(), a)].into();
        let now: BTreeMap<String, Stats> = [("ctx-0".to_string(), b)].into();
        let t = table(&now, Some((&prev, 2.0)));
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("context") && lines[0].contains("faults/s"),
            "{t}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[0], "ctx-0");
        assert_eq!(cells[1], "3", "ranges: a level, not a rate");
        assert_eq!(cells[5], "10", "faults: (30 - 10) / 2 s");
        assert!(table(&BTreeMap::new(), None).contains("no bound context"));
    }
}
