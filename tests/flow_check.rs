//! Flow validation: the shipped flows pass; one bad fixture per class of error, each reported
//! with file, node and line; `ivr flows check` lists every problem and exits non-zero.

use ivr::config::Config;
use ivr::flow::{load_dir, load_sources, Problem};
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flows");

fn config() -> Config {
    Config::from_toml("").expect("default configuration")
}

fn read_dir(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The base set plus one bad file.
fn problems_with(bad: &str) -> Vec<Problem> {
    let mut sources = read_dir(&Path::new(FIXTURES).join("base"));
    let path = Path::new(FIXTURES).join("bad").join(format!("{bad}.toml"));
    sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
    match load_sources(&sources, &config()) {
        Ok(_) => panic!("{bad}.toml should be refused"),
        Err(p) => p.0,
    }
}

#[test]
fn the_shipped_flows_are_valid() {
    let set = load_dir(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows")),
        &config(),
    )
    .unwrap_or_else(|p| panic!("{p}"));
    assert!(set.flows.contains_key("store") && set.flows.contains_key("guest_care"));
    assert_eq!(set.version.len(), 12);
}

#[test]
fn the_good_fixture_set_is_valid() {
    load_sources(&read_dir(&Path::new(FIXTURES).join("base")), &config())
        .unwrap_or_else(|p| panic!("{p}"));
}

#[test]
fn the_flow_version_changes_when_a_file_changes() {
    let mut sources = read_dir(&Path::new(FIXTURES).join("base"));
    let before = load_sources(&sources, &config()).unwrap().version;
    sources[0].1.push_str("\n# edited\n");
    let after = load_sources(&sources, &config()).unwrap().version;
    assert_ne!(before, after);
}

#[test]
fn every_class_of_flow_error_is_reported_with_file_node_and_line() {
    let cases: &[(&str, &str, Option<&str>, usize)] = &[
        (
            "unknown_node",
            "refers to unknown node `unknown_node.nowhere`",
            Some("a"),
            3,
        ),
        (
            "unknown_flow",
            "refers to unknown node `elsewhere.start`",
            Some("a"),
            3,
        ),
        ("unknown_target", "unknown target `the_moon`", Some("a"), 3),
        ("unreachable", "is unreachable", Some("orphan"), 6),
        ("duplicate_digit", "duplicate digit `1`", Some("a"), 3),
        (
            "menu_without_no_input",
            "needs no-input handling",
            Some("a"),
            3,
        ),
        (
            "menu_without_invalid",
            "needs invalid-input handling",
            Some("a"),
            3,
        ),
        ("menu_without_fallback", "needs `fallback`", Some("a"), 3),
        ("star_option", "`*` is reserved", Some("a"), 3),
        (
            "option_without_label",
            "option `2` needs a `label`",
            Some("a"),
            3,
        ),
        ("no_way_out", "has no way out", Some("a"), 3),
        (
            "loop_without_waiting",
            "loops back to itself without waiting",
            Some("a"),
            3,
        ),
        (
            "field_of_another_kind",
            "`next` does not apply to a hangup node",
            Some("a"),
            3,
        ),
        ("unknown_kind", "unknown kind \"dance\"", Some("a"), 3),
        (
            "unknown_placeholder",
            "unknown placeholder {customer_name}",
            Some("a"),
            3,
        ),
        ("unknown_contact", "unknown contact `ceo`", Some("a"), 3),
        (
            "unknown_category",
            "unknown ticket category \"Urgent\"",
            Some("a"),
            3,
        ),
        (
            "whisper_on_send_digits",
            "target `escalation` is reached through an IVR (send_digits)",
            Some("a"),
            4,
        ),
        (
            "queue_without_wait_message",
            "set `wait_message`",
            Some("a"),
            3,
        ),
        (
            "loop_through_closed_transfer",
            "loops back to itself without waiting",
            Some("a"),
            3,
        ),
        (
            "unknown_var",
            "uses {var.purchase_dat}, which no node sets",
            Some("a"),
            3,
        ),
        (
            "entry_without_errors",
            "needs `errors.not_a_date`",
            Some("a"),
            3,
        ),
        (
            "missing_start",
            "start node `nowhere` does not exist",
            Some("nowhere"),
            1,
        ),
    ];
    for (bad, message, node, line) in cases {
        let problems = problems_with(bad);
        let found = problems
            .iter()
            .find(|p| p.message.contains(message))
            .unwrap_or_else(|| panic!("{bad}: no problem containing {message:?} in {problems:#?}"));
        assert!(
            found.file.ends_with(&format!("bad/{bad}.toml")),
            "{bad}: file {}",
            found.file
        );
        assert_eq!(found.node.as_deref(), *node, "{bad}: node");
        assert_eq!(found.line, Some(*line), "{bad}: line of {found}");
    }
}

#[test]
fn every_problem_is_listed_even_behind_a_broken_node() {
    let problems = problems_with("several_problems");
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let has = |node: &str, message: &str| {
        problems
            .iter()
            .any(|p| p.node.as_deref() == Some(node) && p.message.contains(message))
    };
    assert!(has("a", "needs `text`"), "{text:#?}");
    assert!(has("b", "refers to unknown node"), "{text:#?}");
    assert!(has("orphan", "is unreachable"), "{text:#?}");
    assert!(
        !has("b", "is unreachable"),
        "b is reached through a, which failed to build: {text:#?}"
    );
}

#[test]
fn unknown_fields_and_syntax_errors_name_the_file_and_line() {
    let typo = problems_with("unknown_field");
    assert!(typo[0].message.contains("unknown field `txet`"), "{typo:?}");
    assert_eq!(typo[0].line, Some(5));
    let syntax = problems_with("toml_syntax");
    assert!(syntax[0].file.ends_with("toml_syntax.toml"));
    assert_eq!(syntax[0].line, Some(4));
}

fn ivr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(args)
        .env_remove("IVR_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run ivr")
}

#[test]
fn ivr_flows_check_passes_the_shipped_flows() {
    let out = ivr(&["flows", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn ivr_flows_draw_pictures_every_menu_option_with_its_label_and_each_transfers_whisper() {
    let out = ivr(&["flows", "draw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph flows {"), "{dot}");
    for expected in [
        r#""store.main" -> "store.delivered" [label="1: the purchase was delivered"];"#,
        r#""store.new_concern_menu" -> "store.service_ticket" [label="2: service or a repair"];"#,
        r#"[label="store.order_transfer\ntransfer to oom, whisper: screen"];"#,
        r#""store.order_transfer" -> "common.transfer_failed" [label="not answered or declined"];"#,
    ] {
        assert!(dot.contains(expected), "missing {expected} in:\n{dot}");
    }
    // Every menu option of the shipped flows is drawn with a label.
    let set = ivr::flow::load_dir(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/ivr_flows")),
        &config(),
    )
    .unwrap_or_else(|p| panic!("{p}"));
    let picture = ivr::flow::picture::picture(&set);
    let options: Vec<_> = picture.edges.iter().filter(|e| e.digit.is_some()).collect();
    assert!(options.len() > 20, "{}", options.len());
    for e in options {
        assert!(!e.label.is_empty(), "{e:?}");
        let line = format!(
            "-> \"{}\" [label=\"{}: {}\"]",
            e.to,
            e.digit.unwrap_or('?'),
            e.label
        );
        assert!(dot.contains(&line), "missing {line}");
    }
    // The escalation line is an IVR: never a whisper.
    assert!(
        dot.contains("transfer to escalation, whisper: off"),
        "{dot}"
    );
    assert!(!dot.contains("transfer to escalation, whisper: screen"));
}

#[test]
fn ivr_flows_check_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in read_dir(&Path::new(FIXTURES).join("base")) {
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    for bad in ["unknown_target", "duplicate_digit", "unreachable"] {
        let from = Path::new(FIXTURES).join("bad").join(format!("{bad}.toml"));
        std::fs::copy(from, dir.path().join(format!("{bad}.toml"))).unwrap();
    }
    let out = ivr(&["flows", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "unknown_target.toml:3: node `a`: unknown target `the_moon`",
        "duplicate_digit.toml:3: node `a`: duplicate digit `1`",
        "unreachable.toml:6: node `orphan`: is unreachable",
        "3 problem(s) in flows",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn the_example_configuration_is_valid_and_matches_the_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ivr.example.toml")).unwrap();
    let example = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e:#}"));
    let defaults = config();
    assert_eq!(example.targets, defaults.targets);
    assert_eq!(example.whispers, defaults.whispers);
    assert_eq!(example.contacts, defaults.contacts);
    assert_eq!(example.texts, defaults.texts);
    assert_eq!(example.shopping_dollars, defaults.shopping_dollars);
    assert_eq!(example.schedule.describe(), defaults.schedule.describe());
    assert_eq!(example.listen, defaults.listen);
    assert_eq!(format!("{:?}", example.sla), format!("{:?}", defaults.sla));
    assert_eq!(
        format!("{:?}", example.smtp),
        format!("{:?}", defaults.smtp)
    );
}
