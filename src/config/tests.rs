//! Flags, environment, file: precedence and parsing.

use super::*;

#[test]
fn file_is_overridden_by_flags_and_unknown_keys_are_refused() {
    let dir = std::env::temp_dir().join(format!("lockstep-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "lead-ms = 250\ntick-interval-ms = 100\nbuffering-policy = \"ignore\"\n").unwrap();
    let cli = Cli::parse_from(["lockstep", "serve", "--config", good.to_str().unwrap(), "--lead-ms", "50"]);
    let Command::Serve(args) = cli.command else { panic!("serve") };
    let cfg = args.resolve().unwrap();
    assert_eq!((cfg.lead_ms, cfg.tick_interval_ms), (50, 100));
    assert_eq!(cfg.buffering_policy, BufferingPolicy::Ignore);
    assert_eq!(cfg.http_addr, Config::default().http_addr);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "lead-ms = 250\nno-such-key = 1\n").unwrap();
    let cli = Cli::parse_from(["lockstep", "serve", "--config", bad.to_str().unwrap()]);
    let Command::Serve(args) = cli.command else { panic!("serve") };
    let err = args.resolve().unwrap_err().to_string();
    assert!(err.contains("no-such-key"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    let cli = Cli::parse_from(["lockstep", "serve", "--buffering-policy", "ignore"]);
    let Command::Serve(args) = cli.command else { panic!("serve") };
    assert_eq!(args.resolve().unwrap().room_config().buffering, BufferingPolicy::Ignore);
    assert!(Cli::try_parse_from(["lockstep", "serve", "--buffering-policy", "never"]).is_err());
}

#[test]
fn chat_limits_are_checked() {
    let resolve = |args: &[&str]| {
        let cli = Cli::parse_from([&["lockstep", "serve"], args].concat());
        let Command::Serve(args) = cli.command else { panic!("serve") };
        args.resolve()
    };
    assert!(resolve(&["--chat-room-rate", "100000"]).is_ok());
    let err = resolve(&["--chat-room-rate", "100001"]).unwrap_err().to_string();
    assert!(err.contains("--chat-room-rate"), "{err}");
    assert!(resolve(&["--chat-history", "1001"]).is_err());
    assert!(resolve(&["--chat-max-bytes", "0"]).is_err());
}

#[test]
fn live_room_options() {
    let room = |args: &[&str]| {
        let cli = Cli::parse_from([&["lockstep", "serve"], args].concat());
        let Command::Serve(args) = cli.command else { panic!("serve") };
        args.resolve().map(|c| c.room_config())
    };
    let media = room(&[]).unwrap();
    assert_eq!((media.clock, media.live_latency), (ClockKind::Media, LiveLatency::Fixed { latency_ms: 3_000 }));
    let live = room(&["--room-clock", "live", "--live-latency-ms", "4500"]).unwrap();
    assert_eq!((live.clock, live.live_latency), (ClockKind::Live, LiveLatency::Fixed { latency_ms: 4_500 }));
    let auto = room(&["--room-clock", "live", "--live-latency-ms", "auto", "--live-latency-max-ms", "9000"]).unwrap();
    assert_eq!(auto.live_latency, LiveLatency::Auto { min_ms: 1_000, max_ms: 9_000 });
    assert!(room(&["--live-latency-min-ms", "5000", "--live-latency-max-ms", "4000"]).is_err());
    assert!(Cli::try_parse_from(["lockstep", "serve", "--live-latency-ms", "soon"]).is_err());
    assert!(Cli::try_parse_from(["lockstep", "serve", "--room-clock", "dvr"]).is_err());
    let file: ServeArgs = toml::from_str("room-clock = \"live\"\nlive-latency-ms = \"auto\"\n").unwrap();
    assert_eq!((file.room_clock, file.live_latency_ms), (Some(ClockArg::Live), Some(LatencyArg::Auto)));
    let file: ServeArgs = toml::from_str("live-latency-ms = 2500\n").unwrap();
    assert_eq!(file.live_latency_ms, Some(LatencyArg::Fixed(2_500)));
}

#[test]
fn ttl_units_and_auth_key_sources() {
    assert_eq!(parse_ttl("3600"), Ok(3600));
    assert_eq!(parse_ttl("90s"), Ok(90));
    assert_eq!(parse_ttl("30m"), Ok(1800));
    assert_eq!(parse_ttl("1h"), Ok(3600));
    assert_eq!(parse_ttl("7d"), Ok(604_800));
    assert!(parse_ttl("1w").is_err() && parse_ttl("h").is_err() && parse_ttl("0").is_err());
    let none = Config::default();
    assert!(matches!(none.authenticator(), Err(ConfigError::Invalid(_))), "no key and no --dev is refused");
    let dev = Config { dev: true, ..Config::default() };
    assert!(dev.authenticator().unwrap().dev);
    let weak = Config { jwt_secret: Some("short".into()), ..Config::default() };
    assert!(matches!(weak.authenticator(), Err(ConfigError::Auth(_))));
}

#[test]
fn quic_and_certificate_options() {
    let cfg = Config::default();
    assert_eq!(cfg.quic_addr, "[::]:4433".parse().unwrap());
    assert!(cfg.cert.is_none() && cfg.key.is_none());
    let cli = Cli::parse_from(["lockstep", "serve", "--quic-addr", "[::1]:0", "--cert", "c.pem", "--key", "k.pem"]);
    let Command::Serve(args) = cli.command else { panic!("serve") };
    let cfg = args.resolve().unwrap();
    assert_eq!(cfg.quic_addr, "[::1]:0".parse().unwrap());
    assert_eq!((cfg.cert.unwrap(), cfg.key.unwrap()), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
    let cli = Cli::parse_from(["lockstep", "serve", "--cert", "c.pem"]);
    let Command::Serve(args) = cli.command else { panic!("serve") };
    assert!(args.resolve().unwrap_err().to_string().contains("together"));
    let cli = Cli::parse_from(["lockstep", "cert", "--out", "/tmp/x", "--san", "lan.example"]);
    let Command::Cert(args) = cli.command else { panic!("cert") };
    assert_eq!((args.out, args.san), (PathBuf::from("/tmp/x"), vec!["lan.example".to_owned()]));
}

#[test]
fn live_source_options() {
    let cfg = |args: &[&str]| {
        let cli = Cli::parse_from([&["lockstep", "serve"], args].concat());
        let Command::Serve(args) = cli.command else { panic!("serve") };
        args.resolve().unwrap()
    };
    let off = cfg(&[]);
    assert!(!off.live_source_enabled(), "off unless asked for");
    assert_eq!(off.live_source_ffmpeg, PathBuf::from("ffmpeg"));
    assert_eq!(off.live_source_cache, std::env::temp_dir().join("lockstep-live-source"));
    assert!(cfg(&["--dev"]).live_source_enabled(), "--dev serves it");
    let on = cfg(&[
        "--live-source",
        "--live-source-ffmpeg",
        "/opt/ffmpeg/bin/ffmpeg",
        "--live-source-cache",
        "/var/cache/ls",
    ]);
    assert!(on.live_source_enabled() && !on.dev, "--live-source without --dev");
    assert_eq!(
        (on.live_source_ffmpeg, on.live_source_cache),
        (PathBuf::from("/opt/ffmpeg/bin/ffmpeg"), PathBuf::from("/var/cache/ls"))
    );
    let file: ServeArgs = toml::from_str("live-source = true\nlive-source-cache = \"/c\"\n").unwrap();
    assert!(file.live_source);
    assert_eq!(file.live_source_cache, Some(PathBuf::from("/c")));
}

#[test]
fn a_list_option_takes_one_value_or_several_in_a_file() {
    let dir = std::env::temp_dir().join(format!("lockstep-cfg-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one.toml");
    std::fs::write(&one, "jwt-public-key = \"a.pem\"\n").unwrap();
    assert_eq!(load_file(&one).unwrap().jwt_public_key, Some(vec![PathBuf::from("a.pem")]));
    let two = dir.join("two.toml");
    std::fs::write(&two, "jwt-public-key = [\"a.pem\", \"b.pem\"]\n").unwrap();
    assert_eq!(load_file(&two).unwrap().jwt_public_key, Some(vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn edge_options() {
    let serve = |args: &[&str]| {
        let cli = Cli::try_parse_from([&["lockstep", "serve"], args].concat()).map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command else { panic!("serve") };
        args.resolve().map_err(|e| e.to_string())
    };
    let d = serve(&[]).unwrap();
    assert!(d.cors_origins.is_empty() && d.trusted_proxies.is_empty() && !d.proxy_protocol && !d.http_tls);
    let cfg = serve(&[
        "--cors-origins",
        "https://www.platform.example,http://localhost:3000",
        "--trusted-proxies",
        "10.0.0.0/8,127.0.0.1/32,::1/128",
        "--proxy-protocol",
        "true",
        "--http-tls",
        "true",
    ])
    .unwrap();
    assert_eq!(cfg.cors_origins.origins(), ["https://www.platform.example", "http://localhost:3000"]);
    assert!(cfg.trusted_proxies.contains("10.2.3.4".parse().unwrap()));
    assert!(cfg.proxy_protocol && cfg.http_tls);
    // `*` only with --dev.
    let e = serve(&["--cors-origins", "*"]).unwrap_err();
    assert!(e.contains("only allowed with --dev"), "{e}");
    assert!(serve(&["--cors-origins", "*", "--dev"]).unwrap().cors_origins.is_any());
    // Bad values say what is wrong.
    let e = serve(&["--cors-origins", "www.platform.example"]).unwrap_err();
    assert!(e.contains("scheme://host"), "{e}");
    let e = serve(&["--trusted-proxies", "10.0.0.0/40"]).unwrap_err();
    assert!(e.contains("prefix length"), "{e}");
    let e = serve(&["--proxy-protocol", "true"]).unwrap_err();
    assert!(e.contains("--trusted-proxies"), "{e}");
    // TOML: arrays (or one comma-separated string).
    let file: ServeArgs = toml::from_str(
        "cors-origins = [\"https://a.example\", \"https://b.example\"]\ntrusted-proxies = \"10.0.0.0/8\"\nhttp-tls = true\n",
    )
    .unwrap();
    assert_eq!(file.cors_origins.unwrap().origins(), ["https://a.example", "https://b.example"]);
    assert!(file.trusted_proxies.unwrap().contains("10.0.0.1".parse().unwrap()));
    assert_eq!(file.http_tls, Some(true));
}

#[test]
fn public_urls_and_redis_tls_options_are_checked() {
    let resolve = |args: &[&str]| {
        let cli = Cli::try_parse_from([&["lockstep", "serve"], args].concat()).unwrap();
        let Command::Serve(args) = cli.command else { panic!("serve") };
        args.resolve()
    };
    let cfg = resolve(&[
        "--public-url",
        "https://sync.platform.example",
        "--public-webtransport-url",
        "https://sync.platform.example:443",
    ])
    .unwrap();
    let public = cfg.public_urls().unwrap();
    assert_eq!(public.http(), Some("https://sync.platform.example"));
    assert_eq!(public.webtransport(4433).as_deref(), Some("https://sync.platform.example:443"));
    let file: ServeArgs = toml::from_str("public-url = \"https://a.example\"\nredis-ca = \"/etc/ca.pem\"\n").unwrap();
    assert_eq!(file.public_url.as_deref(), Some("https://a.example"));

    for (args, needle) in [
        (&["--public-url", "sync.platform.example"][..], "--public-url"),
        (&["--public-url", "https://sync.platform.example/?x=1"][..], "no query"),
        (&["--public-webtransport-url", "http://sync.platform.example:4433"][..], "https"),
        (&["--public-webtransport-url", "https://sync.platform.example/wt"][..], "no path"),
        (&["--redis-ca", "/etc/ca.pem"][..], "--redis-ca needs a rediss://"),
        (&["--redis-url", "redis://127.0.0.1/", "--redis-ca", "/etc/ca.pem"][..], "--redis-ca needs a rediss://"),
        (&["--redis-url", "rediss://127.0.0.1/#insecure"][..], "--redis-ca"),
    ] {
        let err = resolve(args).unwrap_err().to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(resolve(&["--redis-url", "rediss://127.0.0.1:6380/0", "--redis-ca", "/etc/ca.pem"]).is_ok());
}
