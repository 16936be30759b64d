//! Showing the configuration: `--help` with every default and no secret
//! values, `lockstep config check` (the effective configuration as TOML,
//! secrets masked) and `lockstep config example` (every option, commented).
//!
//! All three read the same two sources: [`Config::entries`] (each option's
//! TOML key and value, declared once in `serve_options!`) and the option's
//! help text from clap (its doc comment).

use clap::CommandFactory;

use super::{Cli, Config};

/// Options whose values are secret: never printed by `--help` (not even as
/// the value of their variable), masked by `config check`.
pub const SECRETS: &[&str] = &["jwt_secret", "redis_url"];

/// What a secret is shown as.
pub const MASK: &str = "********";

/// `v` as a TOML value; `None` when it has none (an unset option).
pub(crate) fn value<T: serde::Serialize>(v: &T) -> Option<toml::Value> {
    toml::Value::try_from(v).ok()
}

/// `value` of option `key`, masked when the option is secret. A Redis URL
/// keeps its host so an operator can tell which server it names; only its
/// user info (the password) is masked.
pub(crate) fn mask(key: &str, value: toml::Value) -> toml::Value {
    if !SECRETS.contains(&key) {
        return value;
    }
    match (&value, key) {
        (toml::Value::String(url), "redis_url") => toml::Value::String(mask_url_password(url)),
        _ => toml::Value::String(MASK.into()),
    }
}

/// `scheme://user:password@host…` with the password (or a lone user, which
/// Redis takes as the password) masked; other URLs unchanged.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_owned(),
    };
    format!("{scheme}://{userinfo}@{host}{tail}")
}

/// A TOML key of a field name.
fn key(field: &str) -> String {
    field.replace('_', "-")
}

/// A value as `--help` shows it: strings without quotes, lists as on the
/// command line (comma-separated; `none` when empty).
fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) if items.is_empty() => "none".to_owned(),
        toml::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The `lockstep` command line: clap's, with each `serve` option's default
/// appended to its help and secret variables' values hidden.
pub fn command() -> clap::Command {
    let defaults = Config::default().entries();
    let annotate = |cmd: clap::Command| {
        let mut cmd = cmd;
        for (field, default) in &defaults {
            let (field, default) = (*field, default.clone());
            if cmd.get_arguments().all(|a| a.get_id() != field) {
                continue;
            }
            cmd = cmd.mut_arg(field, |arg| {
                let mut arg = arg.hide_env_values(SECRETS.contains(&field));
                let flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
                if let Some(d) = default.as_ref().filter(|_| !flag) {
                    let shown = format!("[default: {}]", plain(d));
                    let help = arg.get_help().map(|h| format!("{h} {shown}")).unwrap_or(shown.clone());
                    if let Some(long) = arg.get_long_help().map(|h| format!("{h}\n\n{shown}")) {
                        arg = arg.long_help(long);
                    }
                    arg = arg.help(help);
                }
                arg
            });
        }
        cmd
    };
    Cli::command()
        .mut_subcommand("serve", annotate)
        .mut_subcommand("token", annotate)
        .mut_subcommand("config", |c| c.mut_subcommand("check", annotate))
}

/// The help text clap has for `serve`'s option `field` (its doc comment).
fn help_of(serve: &clap::Command, field: &str) -> String {
    serve
        .get_arguments()
        .find(|a| a.get_id() == field)
        .and_then(|a| a.get_long_help().or(a.get_help()))
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// The environment variable of `serve`'s option `field`.
fn env_of(serve: &clap::Command, field: &str) -> Option<String> {
    serve
        .get_arguments()
        .find(|a| a.get_id() == field)
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
}

fn serve_command() -> clap::Command {
    Cli::command().find_subcommand("serve").expect("serve is a subcommand").clone()
}

/// `lockstep config check`'s output: every option with its effective value
/// (unset ones commented out), secrets masked.
pub fn effective_toml(cfg: &Config) -> String {
    let mut out = String::from("# The effective configuration (secrets masked).\n");
    for (field, v) in cfg.entries() {
        match v {
            Some(v) => out.push_str(&format!("{} = {v}\n", key(field))),
            None => out.push_str(&format!("# {} is not set\n", key(field))),
        }
    }
    out
}

/// `lockstep config example`'s output: each option's help as a comment,
/// then the option at its default (those without one commented out), so the
/// file loads as it is and changes nothing until edited.
pub fn example() -> String {
    let serve = serve_command();
    let mut out = String::from(
        "# Lockstep configuration: `lockstep serve --config lockstep.toml`.\n\
         # Flags and LOCKSTEP_* variables override this file; unknown keys are refused.\n\
         # Every option is shown at its default; those without one are commented out.\n",
    );
    for (field, default) in Config::default().entries() {
        out.push('\n');
        for line in help_of(&serve, field).lines() {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
        if let Some(env) = env_of(&serve, field) {
            out.push_str(&format!("# (flag --{}, variable {env})\n", key(field)));
        }
        match default {
            Some(v) => out.push_str(&format!("{} = {v}\n", key(field))),
            None => out.push_str(&format!("# {} = …\n", key(field))),
        }
    }
    out
}
