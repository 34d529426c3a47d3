//! `watch --metrics-file`: one node_exporter textfile for the whole run, a series per target
//! (labels `target` and `pool`). Each target's samples are the classic run's (`metrics::render`);
//! here they are gathered under one HELP and TYPE per metric, as the text format requires.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::run::Done;
use crate::config::watch::Target;
use crate::state;

/// The textfile of a run that did `done` about `targets`.
pub fn render(targets: &[Target], done: &[Done]) -> String {
    let now = state::unix_seconds(SystemTime::now());
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for d in done {
        let target = &targets[d.index];
        let text = crate::metrics::render(
            &target.config.probe.target.to_string(),
            &d.seen,
            &d.state,
            &target.config.limits,
            now,
        );
        let pool = target.pool.as_deref().unwrap_or("");
        for line in text.lines() {
            let header = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "));
            let name = match header {
                Some(rest) => rest.split(' ').next().unwrap_or_default(),
                None => line.split(['{', ' ']).next().unwrap_or_default(),
            }
            .to_owned();
            let family = families.entry(name.clone()).or_insert_with(|| {
                order.push(name);
                (Vec::new(), Vec::new())
            });
            if header.is_some() {
                if family.0.len() < 2 {
                    family.0.push(line.to_owned());
                }
            } else {
                family.1.push(line.replacen(
                    "{target=",
                    &format!("{{pool=\"{}\",target=", label(pool)),
                    1,
                ));
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((header, samples)) = families.get(&name) {
            for line in header.iter().chain(samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A label value as the text format wants it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
