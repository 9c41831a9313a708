//! The config's tables: defaults, every problem with its key, environment
//! overrides, secrets from files.

use super::*;

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, text).unwrap();
    std::fs::write(dir.path().join("secret"), "whsec_c2VjcmV0\n").unwrap();
    load_with_env(
        &file,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn keys(r: Result<Config, ConfigErrors>) -> Vec<String> {
    match r {
        Ok(_) => vec![],
        Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
    }
}

#[test]
fn defaults_and_relative_paths() {
    let cfg = load_text(
        "[verify]\nsecret_file = \"secret\"\n[store]\npath = \"../data/relay.db\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(cfg.server.path, "/hooks/replicate");
    assert_eq!(cfg.server.max_body, 10 * 1024 * 1024);
    assert_eq!(cfg.server.max_unverified, 64 * 1024 * 1024);
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.server.max_connections, 1024);
    assert_eq!(cfg.verify.tolerance, Duration::from_secs(300));
    assert_eq!(cfg.verify.secrets.len(), 1);
    assert!(cfg.store.path.ends_with("data/relay.db"));
    assert!(!cfg.store.path.to_string_lossy().contains(".."));
    assert!(cfg.routes.is_empty() && cfg.notifiers.is_empty());
}

#[test]
fn problem_table() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[server]\nlisten = \"localhost\"\n[verify]\ninsecure = true",
            &["server.listen"],
        ),
        (
            "[server]\nlistn = \"127.0.0.1:1\"\n[verify]\ninsecure = true",
            &["server.listn"],
        ),
        ("server = 5\n[verify]\ninsecure = true", &["server"]),
        (
            "[server]\nlisten = [1]\n[verify]\ninsecure = true",
            &["server.listen"],
        ),
        (
            "[server]\npath = \"hooks\"\n[verify]\ninsecure = true",
            &["server.path"],
        ),
        (
            "[server]\nmax_body = \"ten megs\"\n[verify]\ninsecure = true",
            &["server.max_body"],
        ),
        (
            "[server]\nmax_body = 10\n[verify]\ninsecure = true",
            &["server.max_body"],
        ),
        (
            "[server]\nmax_body = \"20MiB\"\nmax_unverified = \"10MiB\"\n[verify]\ninsecure = true",
            &["server.max_unverified"],
        ),
        (
            "[server]\nmax_body = \"20MiB\"\nmax_unverified = \"80MiB\"\n[verify]\ninsecure = true",
            &[],
        ),
        // Twice the largest size there is: no overflow.
        (
            "[server]\nmax_body = \"18446744073709551615\"\n[verify]\ninsecure = true",
            &[],
        ),
        (
            "[server]\nmax_connections = 3\nidle_timeout = \"0s\"\n[verify]\ninsecure = true",
            &["server.idle_timeout", "server.max_connections"],
        ),
        (
            "[server]\nmax_unverified = \"lots\"\n[verify]\ninsecure = true",
            &["server.max_unverified"],
        ),
        ("[verify]\nsecret = \"abc\"", &["verify.secret"]),
        (
            "[verify]\nsecret = [\"whsec_c2VjcmV0\", \"nope\"]",
            &["verify.secret[1]"],
        ),
        (
            "[verify]\nsecret_file = \"missing\"",
            &["verify.secret_file"],
        ),
        (
            "[verify]\ntolerance = \"soon\"\nsecret_file = \"secret\"",
            &["verify.tolerance"],
        ),
        ("[verify]\ninsecure = \"maybe\"", &["verify.insecure"]),
        (
            "[verify]\nsecret = 5\ntolerance = [1]",
            &["verify.tolerance", "verify.secret"],
        ),
        ("", &["verify"]),
        ("[verfy]\ninsecure = true", &["verfy", "verify"]),
        (
            "[verify]\nsecret_file = \"secret\"\nsecret = \"whsec_c2VjcmV0\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[templates]\ndir = \"nowhere\"",
            &["templates.dir"],
        ),
        (
            "[verify]\ninsecure = true\n[delivery]\nmax_age = \"5s\"",
            &["delivery.max_age"],
        ),
        (
            "[verify]\ninsecure = true\n[delivery]\nmax_pause = \"30d\"",
            &["delivery.max_pause"],
        ),
        (
            "[verify]\ninsecure = true\n[delivery]\nmax_pause = \"10m\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[delivery]\nmax_ag = \"5h\"",
            &["delivery.max_ag"],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.keep]\ntype = \"archive\"\nto = \"a\"\n\
             [notifiers.ops]\ntype = \"log\"\n\
             [[routes]]\nnotify = [\"keep\", \"ops\"]\nafter = \"keep\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.keep]\ntype = \"archive\"\nto = \"a\"\n\
             [notifiers.ops]\ntype = \"log\"\n\
             [[routes]]\nnotify = [\"ops\"]\nafter = \"keep\"",
            &["routes[0].after"],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\ntoken = \"r8_x\"\ncatch_up = \"10m\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\ncatch_up = \"10m\"",
            &["replicate.catch_up"],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\ntoken = \"r8_x\"\ncatch_up = \"0s\"\n\
             look_back = \"5s\"\napi_url = \"ftp://x\"\ncatchup = 1",
            &[
                "replicate.catchup",
                "replicate.api_url",
                "replicate.catch_up",
                "replicate.look_back",
            ],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\ntoken = \"r8_x\"\ncatch_up = \"10m\"\n\
             jobs = \"ours\"\nwebhook_url = \"https://relay.example.com/hooks/replicate\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.chat]\ntype = \"slack\"\ntoken = \"xoxb-1\"\n\
             channel = \"#ml\"\n[[routes]]\nnotify = [\"chat\"]\nlifecycle = true",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.chat]\ntype = \"slack\"\n\
             webhook_url = \"https://hooks.slack.com/services/T/B/x\"\n[notifiers.log]\ntype = \"log\"\n\
             [[routes]]\nnotify = [\"chat\", \"log\"]\nlifecycle = true",
            &["routes[0].lifecycle", "routes[0].lifecycle"],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.log]\ntype = \"log\"\n\
             [[routes]]\nnotify = [\"log\"]\nprogress = \"1m\"",
            &["routes[0].progress"],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.chat]\ntype = \"slack\"\ntoken = \"xoxb-1\"\n\
             channel = \"#ml\"\n[[routes]]\nnotify = [\"chat\"]\ngroup_by = [\"query.sweep\"]\n\
             group_wait = \"1m\"\ngroup_max_wait = \"10m\"",
            &[],
        ),
        (
            "[verify]\ninsecure = true\n[notifiers.chat]\ntype = \"slack\"\ntoken = \"xoxb-1\"\n\
             channel = \"#ml\"\n[notifiers.keep]\ntype = \"archive\"\nto = \"a\"\n\
             [[routes]]\nnotify = [\"chat\", \"keep\"]\ngroup_by = [\"query.sweep\"]\n\
             group_wait = \"10m\"\ngroup_max_wait = \"1m\"\nlifecycle = true\n\
             [[routes]]\nnotify = [\"chat\"]\ngroup_wait = \"1m\"",
            &[
                "routes[0].group_by",
                "routes[0].group_max_wait",
                "routes[1].group_wait",
                "routes[0].group_by",
                "routes[0].lifecycle",
            ],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\njobs = \"ours\"",
            &["replicate.jobs"],
        ),
        (
            "[verify]\ninsecure = true\n[replicate]\njobs = \"mine\"\nwebhook_url = \"relay\"",
            &["replicate.webhook_url", "replicate.jobs"],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(keys(load_text(text, &[])), *want, "config:\n{text}");
    }
}

#[test]
fn a_jobs_webhook_is_ours_when_it_points_at_webhook_url_whatever_its_query() {
    let cfg = load_text(
        "[verify]\ninsecure = true\n[replicate]\n\
         webhook_url = \"https://relay.example.com/hooks/replicate\"",
        &[],
    )
    .unwrap();
    let cases = [
        ("https://relay.example.com/hooks/replicate", true),
        (
            "https://relay.example.com/hooks/replicate?team=vision",
            true,
        ),
        ("https://relay.example.com:443/hooks/replicate", true),
        ("https://RELAY.example.com/hooks/replicate", true),
        ("http://relay.example.com/hooks/replicate", false),
        ("https://relay.example.com:8443/hooks/replicate", false),
        ("https://relay.example.com/hooks/other", false),
        ("https://other.example.com/hooks/replicate", false),
        ("not a url", false),
    ];
    for (webhook, ours) in cases {
        assert_eq!(cfg.replicate.is_ours(webhook), ours, "{webhook}");
    }
}

#[test]
fn three_mistakes_are_all_reported() {
    let err = load_text(
        "[server]\nlisten = \"nowhere\"\n[verify]\nsecret = \"plain\"\n[store]\npth = \"x\"\n",
        &[],
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.problems.len(), 3, "{text}");
    assert!(text.contains("3 problems"), "{text}");
    assert!(text.contains("server.listen"), "{text}");
    assert!(
        text.contains("verify.secret: does not start with `whsec_`"),
        "{text}"
    );
    assert!(text.contains("store.pth: unknown key"), "{text}");
}

#[test]
fn environment_overrides_keys() {
    let cfg = load_text(
        "[verify]\nsecret = \"whsec_c2VjcmV0\"\n",
        &[
            ("RELAY__SERVER__LISTEN", "0.0.0.0:9000"),
            ("RELAY__SERVER__MAX_BODY", "2048"),
            ("RELAY__VERIFY__TOLERANCE", "1m"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(cfg.server.max_body, 2048);
    assert_eq!(
        cfg.server.max_unverified,
        64 * 1024 * 1024,
        "at least the default, when twice max_body is less"
    );
    assert_eq!(cfg.verify.tolerance, Duration::from_secs(60));

    // A secret only in the environment is enough.
    let cfg = load_text("", &[("RELAY__VERIFY__SECRET", "whsec_c2VjcmV0")]).unwrap();
    assert_eq!(cfg.verify.secrets.len(), 1);
    let cfg = load_text("", &[("RELAY__VERIFY__INSECURE", "true")]).unwrap();
    assert!(cfg.verify.insecure);
}

#[test]
fn credentials_directory_in_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook-secret"), "whsec_c2VjcmV0\n").unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "[verify]\nsecret_file = \"${CREDENTIALS_DIRECTORY}/webhook-secret\"\n",
    )
    .unwrap();
    let env = [(
        "CREDENTIALS_DIRECTORY".to_string(),
        dir.path().display().to_string(),
    )];
    assert_eq!(load_with_env(&file, env).unwrap().verify.secrets.len(), 1);
    let err = load_with_env(&file, []).unwrap_err();
    assert!(
        err.to_string()
            .contains("${CREDENTIALS_DIRECTORY}, which is not set"),
        "{err}"
    );
}

#[test]
fn secret_file_with_several_secrets_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets"),
        "# old key, remove after rotation\nwhsec_c2VjcmV0\n\nwhsec_b3RoZXI=\n",
    )
    .unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "[verify]\nsecret_file = \"secrets\"\n").unwrap();
    let cfg = load_with_env(&file, []).unwrap();
    assert_eq!(cfg.verify.secrets.len(), 2);
}

#[test]
fn the_development_secret_warns_and_secret_values_never_show() {
    let cfg = load_text(
        &format!("[verify]\nsecret = \"{DEVELOPMENT_SECRET}\"\n"),
        &[],
    )
    .unwrap();
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("development secret"))
    );
    let err = load_text("[verify]\nsecret = \"supersecretvalue\"\n", &[]).unwrap_err();
    assert!(!err.to_string().contains("supersecretvalue"), "{err}");
    assert!(!format!("{cfg:?}").contains(&DEVELOPMENT_SECRET[6..]));
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let err = load_text("[server\nlisten = 1", &[]).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn acme_section() {
    let base = "[verify]\ninsecure = true\n[store]\npath = \"/srv/relay/relay.db\"\n";
    let cfg = load_text(
        &format!("{base}[server.tls.acme]\ndomains = [\"Relay.Example.org\"]\ncontact = \"ops@example.org\"\n"),
        &[],
    )
    .unwrap();
    let Some(TlsConfig::Acme(acme)) = cfg.server.tls else {
        panic!("{:?}", cfg.server.tls)
    };
    assert_eq!(acme.domains, ["relay.example.org"]);
    assert_eq!(acme.contact, ["mailto:ops@example.org"]);
    assert_eq!(acme.directory, server::LETS_ENCRYPT);
    assert_eq!(acme.cache_dir, std::path::Path::new("/srv/relay/acme"));
    assert_eq!((acme.http_listen, acme.renew_before), (None, None));

    let staging = load_text(
        &format!("{base}[server.tls.acme]\ndomains = \"a.example\"\ndirectory = \"letsencrypt-staging\"\nhttp_listen = \"[::]:80\"\nrenew_before = \"20d\"\n"),
        &[],
    )
    .unwrap();
    let Some(TlsConfig::Acme(acme)) = staging.server.tls else {
        panic!()
    };
    assert_eq!(acme.directory, server::LETS_ENCRYPT_STAGING);
    assert_eq!(acme.http_listen.unwrap().port(), 80);
    assert_eq!(acme.renew_before, Some(Duration::from_secs(20 * 86400)));

    let cases: &[(&str, &[&str])] = &[
        ("", &["server.tls.acme.domains"]),
        ("domains = []", &["server.tls.acme.domains"]),
        (
            "domains = [\"*.example.org\"]",
            &["server.tls.acme.domains[0]"],
        ),
        (
            "domains = [\"a.example\", \"A.example\"]",
            &["server.tls.acme.domains[1]"],
        ),
        (
            "domains = [\"a.example\"]\ndirectory = \"http://acme.example/dir\"",
            &["server.tls.acme.directory"],
        ),
        (
            "domains = [\"a.example\"]\ncontact = \"ops\"",
            &["server.tls.acme.contact[0]"],
        ),
        (
            "domains = [\"a.example\"]\nhttp_listen = \"80\"",
            &["server.tls.acme.http_listen"],
        ),
        (
            "domains = [\"a.example\"]\nrenew_before = \"1h\"",
            &["server.tls.acme.renew_before"],
        ),
        (
            "domains = [\"a.example\"]\ndirectory_ca_file = \"nope.pem\"",
            &["server.tls.acme.directory_ca_file"],
        ),
        (
            "domains = [\"a.example\"]\ndomain = \"b.example\"",
            &["server.tls.acme.domain"],
        ),
    ];
    for (acme, want) in cases {
        let text = format!("{base}[server.tls.acme]\n{acme}\n");
        assert_eq!(keys(load_text(&text, &[])), *want, "config:\n{text}");
    }
    // Files and ACME together: which to use is not guessed.
    let both = format!(
        "{base}[server.tls]\ncert_file = \"c.pem\"\n[server.tls.acme]\ndomains = [\"a.example\"]\n"
    );
    assert_eq!(keys(load_text(&both, &[])), ["server.tls.cert_file"]);
}

#[test]
fn a_postgresql_store() {
    let base = "[verify]\nsecret_file = \"secret\"\n";
    let cfg = load_text(
        &format!("{base}[store]\nurl = \"postgres://relay@db.internal:5433/relay?sslmode=require\"\ninstance = \"relay-a\"\n"),
        &[("RELAY__STORE__PASSWORD", "s3cret")],
    )
    .unwrap();
    let pg = cfg.store.postgres.unwrap();
    assert_eq!(pg.instance, "relay-a");
    assert_eq!(pg.password.unwrap().expose(), "s3cret");
    assert!(
        !format!("{:?}", pg.url).contains("relay@db"),
        "the URL is a secret"
    );
    assert!(load_text(base, &[]).unwrap().store.postgres.is_none());
    // libpq's stricter modes are what the store does with TLS anyway.
    let verified = load_text(
        &format!("{base}[store]\nurl = \"postgres://relay@db/relay?sslmode=verify-full\"\n"),
        &[],
    );
    assert!(verified.unwrap().store.postgres.is_some());
    for (store, key) in [
        ("url = \"mysql://relay@db/relay\"", "store.url"),
        (
            "url = \"postgres://relay@db/relay?sslmode=sometimes\"",
            "store.url",
        ),
        ("password = \"x\"", "store"),
    ] {
        assert_eq!(
            keys(load_text(&format!("{base}[store]\n{store}\n"), &[])),
            [key],
            "{store}"
        );
    }
}
