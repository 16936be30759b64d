//! The `lockstep` command's configuration surface, run as an operator runs it:
//! `--help` shows every default and no secret, `config check` validates and
//! prints the effective configuration with secrets masked, `config example`
//! prints a file that loads as it is.

use std::process::{Command, Output};

const SECRET: &str = "0123456789abcdef0123456789abcdef-very-secret";
const REDIS_PASSWORD: &str = "hunter2-redis-password";

fn lockstep(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The tests' own environment must not leak into what is checked.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOCKSTEP_")) {
        if env.iter().all(|(e, _)| *e != k) {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run lockstep")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("LOCKSTEP_JWT_SECRET", SECRET.to_owned()),
        ("LOCKSTEP_REDIS_URL", format!("redis://lockstep:{REDIS_PASSWORD}@redis.internal:6379/0")),
    ]
}

#[test]
fn help_shows_every_default_and_no_secret_value() {
    let env = secrets();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = lockstep(&["serve", "--help"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let help = text(&out);
    for shown in [
        "[default: 127.0.0.1:8080]",
        "[default: [::]:4433]",
        "[default: 250]",
        "[default: host-only]",
        "[default: wait]",
        "[default: 3000]",
        "[default: media]",
        "--cors-origins <CORS_ORIGINS>",
    ] {
        assert!(help.contains(shown), "--help lacks {shown}:\n{help}");
    }
    assert!(!help.contains("[default: []]"), "an empty list is shown as on the command line:\n{help}");
    assert!(!help.contains(SECRET), "--help printed the JWT secret:\n{help}");
    assert!(!help.contains(REDIS_PASSWORD), "--help printed the Redis password:\n{help}");
    assert!(help.contains("LOCKSTEP_JWT_SECRET"), "the variable's name is still shown");
    // Every option that has a default says so.
    let example = text(&lockstep(&["config", "example"], &[]));
    let with_default = example.lines().filter(|l| !l.starts_with('#') && l.contains(" = ")).count();
    assert!(help.matches("[default: ").count() >= with_default - 3, "a default is missing from --help:\n{help}");
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let env = secrets();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = lockstep(&["config", "check", "--lead-ms", "150"], &env);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("lead-ms = 150"), "{shown}");
    assert!(shown.contains("tick-interval-ms = 250"), "{shown}");
    assert!(shown.contains("jwt-secret = \"********\""), "{shown}");
    assert!(shown.contains("redis-url = \"redis://lockstep:********@redis.internal:6379/0\""), "{shown}");
    assert!(!shown.contains(SECRET) && !shown.contains(REDIS_PASSWORD), "{shown}");
    assert!(shown.contains("configuration OK"), "{shown}");
}

#[test]
fn config_check_refuses_a_bad_configuration_with_the_reason() {
    let dir = crate::common::fresh_dir("config-check");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "no token key"),
        (vec!["--dev".into(), "--cert".into(), "c.pem".into()], "--cert and --key must be given together"),
        (
            vec![
                "--dev".into(),
                "--live-latency-min-ms".into(),
                "9000".into(),
                "--live-latency-max-ms".into(),
                "10".into(),
            ],
            "--live-latency-min-ms",
        ),
        (
            vec![
                "--dev".into(),
                "--cert".into(),
                dir.join("missing.pem").display().to_string(),
                "--key".into(),
                dir.join("missing.key").display().to_string(),
            ],
            "missing.pem",
        ),
    ];
    for (args, reason) in cases {
        let mut all = vec!["config", "check"];
        all.extend(args.iter().map(String::as_str));
        let out = lockstep(&all, &[]);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out).contains(reason), "{args:?}: {}", text(&out));
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "dev = true\nno-such-option = 1\n").unwrap();
    let out = lockstep(&["config", "check", "--config", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success() && text(&out).contains("no-such-option"), "{}", text(&out));
}

#[test]
fn config_example_lists_every_option_and_loads_as_it_is() {
    let out = lockstep(&["config", "example"], &[]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    // Every flag of `serve` is in the example, with its variable.
    let help = text(&lockstep(&["serve", "--help"], &[]));
    for flag in help.split_whitespace().filter(|w| w.starts_with("--") && w.len() > 2) {
        let flag = flag.trim_end_matches([',', '.', ')', '`']).trim_start_matches("--");
        if ["help", "config"].contains(&flag) || !flag.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        assert!(example.contains(&format!("{flag} = ")), "the example lacks {flag}:\n{example}");
    }
    assert!(example.contains("# (flag --lead-ms, variable LOCKSTEP_LEAD_MS)"), "{example}");
    // As written it changes nothing: the effective configuration equals the defaults'.
    let dir = crate::common::fresh_dir("config-example");
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, example.replace("\ndev = false\n", "\ndev = true\n")).unwrap();
    let from_file = lockstep(&["config", "check", "--config", file.to_str().unwrap()], &[]);
    assert!(from_file.status.success(), "{}", text(&from_file));
    let defaults = lockstep(&["config", "check", "--dev"], &[]);
    assert_eq!(String::from_utf8_lossy(&from_file.stdout), String::from_utf8_lossy(&defaults.stdout));
}

/// The configuration in `deploy/kubernetes/lockstep.yaml` (its ConfigMap's `lockstep.toml`) is one the
/// server accepts: every key exists and every value parses (the certificate files are the test's own).
#[test]
fn the_kubernetes_example_configuration_is_valid() {
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/lockstep.yaml")).unwrap();
    let block: String = yaml
        .split_once("lockstep.toml: |\n")
        .expect("the ConfigMap holds lockstep.toml")
        .1
        .lines()
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(block.contains("public-url") && block.contains("cors-origins"), "{block}");
    let dir = crate::common::fresh_dir("k8s-config");
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, &block).unwrap();
    let pair = lockstep::cert::write_dev_pair(&dir, &[]).unwrap();
    let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
    let out = lockstep(
        &["config", "check", "--config", file.to_str().unwrap(), "--cert", cert, "--key", key],
        &[("LOCKSTEP_JWT_SECRET", SECRET)],
    );
    assert!(out.status.success(), "{}\n{block}", text(&out));
    assert!(text(&out).contains("public-url = \"https://sync.platform.example\""), "{}", text(&out));
}
