//! No `std` `RandomState` (or any per-process seeded hashing) in the crate: every map is built
//! with a fixed hasher, so runs are reproducible and results never depend on a random seed.

#[test]
fn sources_use_no_random_state() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            // Code only: the docs may name what they avoid.
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for banned in [
                "RandomState",
                "HashMap::new(",
                "HashSet::new(",
                "HashMap::with_capacity(",
                "HashSet::with_capacity(",
                "DefaultHasher",
            ] {
                assert!(
                    !text.contains(banned),
                    "{} uses {banned}: use a fixed hasher",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "found only {checked} source files in {}",
        dir.display()
    );
}
