//! The architecture as docs/design.md draws it: no module imports another that imports it back, and
//! its Layout section names every source file, and only files that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::project;

/// Every `.rs` file under `dir`, relative to the project.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.strip_prefix(project()).unwrap().to_owned());
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let mut found = Vec::new();
    sources(&project().join("src"), &mut found);
    found.sort();
    found
}

/// The top-level module a source file belongs to: `src/fpm/procs.rs` → `fpm`.
fn module_of(path: &Path) -> String {
    let inner = path.strip_prefix("src").unwrap();
    let first = inner
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    // Which top-level modules each one's code (its tests aside) names.
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in all_sources() {
        let text = fs::read_to_string(project().join(&path)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let module = module_of(&path);
        let named = uses.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                named.insert(name);
            }
        }
    }
    // A path from each module back to itself would be a circle.
    for start in uses.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((module, path)) = todo.pop() {
            for next in uses.get(&module).into_iter().flatten() {
                assert!(
                    next != start,
                    "import circle: {} -> {next}",
                    path.join(" -> ")
                );
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    todo.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(uses.len() > 10, "found the modules: {uses:?}");
}

#[test]
fn the_layout_in_the_docs_names_every_source_file() {
    let readme = fs::read_to_string(project().join("docs/design.md")).unwrap();
    let layout = readme
        .split("\n## Layout")
        .nth(1)
        .expect("docs/design.md has a Layout section")
        .split("\n## ")
        .next()
        .unwrap();
    for path in all_sources() {
        let name = format!("`{}`", path.display());
        assert!(layout.contains(&name), "Layout does not name {name}");
    }
    for (at, _) in layout.match_indices("`src/") {
        let named: String = layout[at + 1..].chars().take_while(|c| *c != '`').collect();
        assert!(
            project().join(&named).is_file(),
            "Layout names {named}, which does not exist"
        );
    }
}
