//! The partition catalog of `parti worker` and `parti status`: a count (`--partitions N`, named
//! `p0000`, `p0001`, …), repeated `--partition KEY`, or a file (`--partitions-file FILE`).
//!
//! The file lists one partition per line: its keys joined by `.` (the form of NATS subjects and
//! of `parti status`), then optionally whitespace and a weight (a whole number ≥ 1; 1 when
//! absent, as for the other two forms). Blank lines and everything after a `#` are ignored.
//!
//! ```text
//! # region.shard  weight
//! orders.eu       300
//! orders.us       500
//! billing               # weight 1
//! ```
//!
//! Every problem is reported with its line number, all at once.

use std::collections::BTreeMap;

use parti_core::{Partition, PartitionId};

/// The weight of a partition given without one.
pub(crate) const DEFAULT_WEIGHT: u64 = 1;

/// `count` partitions named `p0000`, `p0001`, … of weight 1 (the names
/// `parti_runtime::StaticSource::numbered` gives).
pub(crate) fn numbered(count: u32) -> Vec<Partition> {
    (0..count)
        .map(|i| Partition::new([format!("p{i:04}")], DEFAULT_WEIGHT).expect("a valid name"))
        .collect()
}

/// Parses a catalog file's text; `Err` lists every problem, one per line, with its line number.
pub(crate) fn parse(text: &str) -> Result<Vec<Partition>, Vec<String>> {
    let mut partitions = Vec::new();
    let mut problems = Vec::new();
    let mut first_line: BTreeMap<PartitionId, usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut fields = content.split_whitespace();
        let name = fields.next().unwrap_or_default();
        let weight = match fields.next() {
            None => DEFAULT_WEIGHT,
            Some(w) => match w.parse::<u64>() {
                Ok(w) => w,
                Err(_) => {
                    problems.push(format!(
                        "line {line}: weight {w:?} is not a whole number ≥ 1"
                    ));
                    continue;
                }
            },
        };
        if let Some(extra) = fields.next() {
            problems.push(format!(
                "line {line}: unexpected {extra:?} after the weight (a line is `keys [weight]`)"
            ));
            continue;
        }
        match Partition::new(name.split('.'), weight) {
            Ok(p) => {
                if let Some(before) = first_line.get(p.id()) {
                    problems.push(format!(
                        "line {line}: partition {name} is already listed on line {before}"
                    ));
                } else {
                    first_line.insert(p.id().clone(), line);
                    partitions.push(p);
                }
            }
            Err(e) => problems.push(format!("line {line}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(partitions)
    } else {
        Err(problems)
    }
}

/// Reads and parses a catalog file.
///
/// # Errors
///
/// The file cannot be read, or lists problems (each with its line number), or lists nothing.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<Partition>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the partitions file {}: {e}", path.display()))?;
    let partitions = parse(&text).map_err(|problems| {
        format!(
            "the partitions file {} has {} problem{}:\n  {}",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        )
    })?;
    if partitions.is_empty() {
        return Err(format!(
            "the partitions file {} lists no partition",
            path.display()
        ));
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_weights_comments_and_blank_lines() {
        let text = "# a catalog\n\norders.eu 300\n  orders.us\t500  # busy\nbilling\n";
        let got = parse(text).expect("valid");
        let want = vec![
            Partition::new(["orders", "eu"], 300).unwrap(),
            Partition::new(["orders", "us"], 500).unwrap(),
            Partition::new(["billing"], 1).unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = "a 0\nb x\nc 1 2\nd..e\na 2\nf\nf\n";
        let problems = parse(text).expect_err("invalid");
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("line 1: ") && problems[0].contains("weight 0"));
        assert!(problems[1].starts_with("line 2: weight \"x\""));
        assert!(problems[2].starts_with("line 3: unexpected \"2\""));
        assert!(problems[3].starts_with("line 4: ") && problems[3].contains("empty key"));
        assert_eq!(
            problems[4],
            "line 7: partition f is already listed on line 6"
        );
    }

    #[test]
    fn numbered_matches_the_runtime_names() {
        let names: Vec<String> = numbered(3).iter().map(|p| p.id().to_string()).collect();
        assert_eq!(names, ["p0000", "p0001", "p0002"]);
    }

    #[test]
    fn a_file_that_lists_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.txt");
        std::fs::write(&path, "# nothing here\n").unwrap();
        let err = read(&path).expect_err("empty");
        assert!(err.contains("lists no partition"), "{err}");
        let missing = read(&dir.path().join("missing.txt")).expect_err("missing");
        assert!(
            missing.contains("cannot read the partitions file"),
            "{missing}"
        );
    }
}
