//! Config loading: the shipped example, unknown keys and bad values, each error naming its key.

use super::*;

fn parse(toml: &str) -> Result<NodeConfig, ConfigError> {
    let raw: RawConfig = Figment::from(Toml::string(toml))
        .extract()
        .map_err(|error| ConfigError::Parse(error.to_string()))?;
    raw.validate()
}

fn error_of(toml: &str) -> String {
    match parse(toml) {
        Ok(_) => panic!("config was accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_embedded_defaults_are_valid_and_use_all_three_provider_kinds() {
    let config = parse(EMBEDDED_DEFAULTS).map_err(|error| error.to_string());
    let kinds: HashSet<ProviderKind> =
        config.iter().flat_map(|config| config.gateway.providers.iter().map(|provider| provider.kind)).collect();
    assert_eq!(kinds.len(), 3, "{config:?}");
}

const MINIMAL: &str = r#"
[[providers]]
name = "sim"
kind = "openai_compatible"
base_url = "http://127.0.0.1:9100/v1"
[[models]]
name = "m"
provider = "sim"
[routing]
preference = ["m"]
"#;

#[test]
fn a_minimal_config_takes_defaults() {
    let config = parse(MINIMAL).map_err(|error| error.to_string());
    assert_eq!(config.as_ref().map(|config| config.http_listen.port()).ok(), Some(8080));
    assert_eq!(config.as_ref().map(|config| config.drain_timeout).ok(), Some(Duration::from_secs(30)));
    assert_eq!(config.as_ref().map(|config| config.worker_threads).ok(), Some(None), "0 workers = one per core");
}

#[test]
fn worker_threads_are_taken_up_to_a_bound() {
    let config = parse(&format!("[server]\nworker_threads = 1\n{MINIMAL}")).map_err(|error| error.to_string());
    assert_eq!(config.map(|config| config.worker_threads).ok(), Some(Some(1)));
    let error = error_of(&format!("[server]\nworker_threads = 5000\n{MINIMAL}"));
    assert!(error.contains("server.worker_threads") && error.contains("5000"), "{error}");
    let error = error_of(&format!("[server]\nworker_threads = -1\n{MINIMAL}"));
    assert!(error.contains("worker_threads"), "{error}");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let error = error_of(&format!("{MINIMAL}\n[server]\nhttp_lisen = \"127.0.0.1:1\"\n"));
    assert!(error.contains("http_lisen"), "{error}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (MINIMAL.replace("http://127.0.0.1:9100/v1", "ftp://x"), "providers[0].base_url"),
        (MINIMAL.replace("provider = \"sim\"", "provider = \"nope\""), "models[0].provider"),
        (MINIMAL.replace("preference = [\"m\"]", "preference = [\"x\"]"), "routing.preference[0]"),
        (format!("{MINIMAL}\n[[routing.rules]]\nname = \"r\"\nmodel = \"ghost\"\n"), "routing.rules[0].model"),
        (format!("{MINIMAL}\n[limits]\nmax_messages = 0\n"), "limits.max_messages"),
        (format!("{MINIMAL}\n[limits]\nmax_output_tokens = 0\n"), "limits.max_output_tokens"),
        (MINIMAL.replace("kind = \"openai_compatible\"", "kind = \"openai_compatible\"\nmax_concurrent = 0"), "providers[0].max_concurrent"),
        (format!("{MINIMAL}\n[semantic_cache]\ncandidates = 0\n"), "semantic_cache.candidates"),
        (format!("{MINIMAL}\n[semantic_cache]\nskip_routes = [\"ghost\"]\n"), "semantic_cache.skip_routes"),
        (format!("{MINIMAL}\n[semantic_cache]\nskip_routes = [\"m\"]\n[semantic_cache.route_precision]\nm = 0.9\n"), "semantic_cache.skip_routes"),
        (MINIMAL.replace("kind = \"openai_compatible\"", "kind = \"openai_compatible\"\napi_key_env = \"SWITCHYARD_TEST_SURELY_UNSET\""), "providers[0].api_key_env"),
    ];
    for (toml, key) in cases {
        let error = error_of(&toml);
        assert!(error.starts_with(key), "expected an error naming {key}, got: {error}");
    }
    let error = error_of(&format!("{MINIMAL}\n[semantic_cache]\nmax_entries = 0\n"));
    assert_eq!(error, "semantic_cache.max_entries: must be at least 1");
    let error = error_of(&MINIMAL.replace("kind = \"openai_compatible\"", "kind = \"opnai\""));
    assert!(error.contains("opnai"), "{error}");
    let error = error_of(&format!("{MINIMAL}\n[server]\ndrain_timeout = \"soon\"\n"));
    assert!(error.contains("drain_timeout"), "{error}");
}

#[test]
fn keys_come_from_the_config_or_a_mounted_file_and_only_their_hashes_are_kept() {
    let dir = std::env::temp_dir().join(format!("switchyard-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        r#"
[[keys]]
id = "from-file"
key_sha256 = "36c76b48bb2ee1d9d37140550e9d7ed7d395cf56f41050dc2a72e5291c0011f0"
tenant = "acme"
user = "bob"
models = ["m"]
"#,
    )
    .expect("writes the keys file");
    let toml = format!(
        "{MINIMAL}\n[tenancy]\nkeys_file = \"{}\"\n[[tenancy.keys]]\nid = \"inline\"\nkey_sha256 = \"099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c\"\ntenant = \"acme\"\nuser = \"alice\"\ntier = \"enterprise\"\ndaily_budget_usd = 2.5\n",
        file.display()
    );
    let config = parse(&toml).map_err(|error| error.to_string());
    let keys: Vec<(String, Tier)> =
        config.iter().flat_map(|config| config.gateway.keys.iter().map(|key| (key.id.clone(), key.tier))).collect();
    assert_eq!(keys, vec![("inline".to_owned(), Tier::Enterprise), ("from-file".to_owned(), Tier::Free)]);
    let budget = config.as_ref().ok().and_then(|config| config.gateway.budget.users.get(&("acme".to_owned(), "alice".to_owned())).copied());
    assert_eq!(budget.and_then(|limits| limits.daily), Some(NanoUsd::from_usd(2.5)));

    let bad = toml.replace("099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c", "abc");
    assert!(error_of(&bad).starts_with("tenancy.keys[0].key_sha256"), "{}", error_of(&bad));
    std::fs::write(&file, "[[keys]]\nid = \"x\"\nkey_sha256 = \"36c76b48bb2ee1d9d37140550e9d7ed7d395cf56f41050dc2a72e5291c0011f0\"\ntenant = \"t\"\nuser = \"u\"\nmodels = [\"gpt-9\"]\n").expect("rewrites the keys file");
    assert!(error_of(&toml).contains("unknown model or route \"gpt-9\""), "{}", error_of(&toml));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cluster_section_is_validated_and_names_each_bad_key() {
    let cookie = std::env::temp_dir().join(format!("switchyard-cookie-{}", std::process::id()));
    std::fs::write(&cookie, "secret\n").expect("cookie written");
    let cluster = |extra: &str| {
        format!("{MINIMAL}\n[cluster]\nnode_name = \"n1\"\nlisten = \"127.0.0.2:7946\"\ncookie_file = \"{}\"\n{extra}", cookie.display())
    };
    let config = parse(&cluster("seeds = [\"127.0.0.3:7946\", \"headless.svc:7946\"]\n")).expect("valid cluster");
    let settings = config.gateway.cluster.expect("clustered");
    assert_eq!(settings.membership.cookie, "secret", "the cookie is read from its file, trimmed");
    assert_eq!(settings.membership.advertise(), "127.0.0.2:7946", "the listen address is advertised by default");
    assert_eq!(settings.replication, 2);
    assert_eq!(settings.remote_lookup_timeout, Duration::from_millis(20));
    assert!(settings.membership.down_after <= Duration::from_secs(5));
    assert!(parse(MINIMAL).expect("valid").gateway.cluster.is_none(), "no section: a node alone");
    for (advertise, dialled) in [("10.0.0.9", "10.0.0.9:7946"), ("pod-0.svc:7946", "pod-0.svc:7946"), ("fd00::9", "[fd00::9]:7946"), ("[fd00::9]:7946", "[fd00::9]:7946")] {
        let config = parse(&cluster(&format!("advertise = \"{advertise}\"\n"))).expect("valid advertise");
        assert_eq!(config.gateway.cluster.expect("clustered").membership.advertise(), dialled, "{advertise}");
    }

    for (extra, key) in [
        ("seeds = [\"no-port\"]\n", "cluster.seeds[0]"),
        ("seeds = [\"host:0\"]\n", "cluster.seeds[0]"),
        ("replication = 0\n", "cluster.replication"),
        ("down_after = \"1s\"\n", "cluster.down_after"),
        ("advertise = \"10.0.0.1:9999\"\n", "cluster.advertise"),
        ("max_frame_bytes = 1024\n", "cluster.max_frame_bytes"),
        ("remote_lookup_timeout = \"0s\"\n", "cluster.remote_lookup_timeout"),
    ] {
        let error = error_of(&cluster(extra));
        assert!(error.starts_with(key), "{extra}: {error}");
    }
    let named = error_of(&format!("{MINIMAL}\n[cluster]\nnode_name = \"a@b\"\ncookie_file = \"{}\"\n", cookie.display()));
    assert!(named.starts_with("cluster.node_name"), "{named}");
    let no_cookie = error_of(&format!("{MINIMAL}\n[cluster]\nnode_name = \"n1\"\n"));
    assert!(no_cookie.contains("cookie_env or cookie_file is required"), "{no_cookie}");
    let missing = error_of(&format!("{MINIMAL}\n[cluster]\nnode_name = \"n1\"\ncookie_env = \"SWITCHYARD_TEST_UNSET_COOKIE\"\n"));
    assert!(missing.starts_with("cluster.cookie_env"), "{missing}");
    let unknown = error_of(&cluster("seed = []\n"));
    assert!(unknown.contains("seed"), "{unknown}");
    let _ = std::fs::remove_file(&cookie);
}

#[test]
fn cluster_tls_loads_the_shipped_script_certificates_and_names_bad_files() {
    let dir = std::env::temp_dir().join(format!("switchyard-cluster-tls-{}", std::process::id()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster-certs.sh");
    for ca in ["one", "two"] {
        let made = std::process::Command::new(&script).arg(dir.join(ca)).output().expect("the certificate script runs");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let cookie = dir.join("cookie");
    std::fs::write(&cookie, "secret").expect("cookie written");
    let cluster = |cert: &str, key: &str, extra: &str| {
        format!(
            "{MINIMAL}\n[cluster]\nnode_name = \"n1\"\nlisten = \"127.0.0.2:7946\"\ncookie_file = \"{}\"\n[cluster.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n{extra}",
            cookie.display(),
            dir.join(cert).display(),
            dir.join(key).display(),
            dir.join("one/ca.pem").display(),
        )
    };
    let config = parse(&cluster("one/node.pem", "one/node-key.pem", "")).expect("valid TLS");
    let tls = config.gateway.cluster.expect("clustered").membership.tls.expect("TLS on");
    assert_eq!(format!("{:?}", tls.server_name), format!("{:?}", rustls::pki_types::ServerName::try_from("switchyard-cluster").expect("a name")));

    let missing = error_of(&cluster("one/absent.pem", "one/node-key.pem", ""));
    assert!(missing.starts_with("cluster.tls") && missing.contains("absent.pem"), "{missing}");
    let mismatched = error_of(&cluster("one/node.pem", "two/node-key.pem", ""));
    assert!(mismatched.starts_with("cluster.tls") && mismatched.contains("key"), "{mismatched}");
    let bad_name = error_of(&cluster("one/node.pem", "one/node-key.pem", "server_name = \"not a name!\"\n"));
    assert!(bad_name.contains("server_name \"not a name!\""), "{bad_name}");
    let unknown = error_of(&cluster("one/node.pem", "one/node-key.pem", "ca = \"x\"\n"));
    assert!(unknown.contains("ca"), "{unknown}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_budget_clock_offset_is_bounded_and_carried_to_the_policy() {
    let config = parse(&format!("{MINIMAL}\n[tenancy]\nbudget_clock_offset_ms = -20000\n")).expect("valid offset");
    assert_eq!(config.gateway.budget.clock_offset_ms, -20_000);
    assert_eq!(parse(MINIMAL).expect("valid").gateway.budget.clock_offset_ms, 0, "unshifted by default");
    let error = error_of(&format!("{MINIMAL}\n[tenancy]\nbudget_clock_offset_ms = 99999999999\n"));
    assert!(error.starts_with("tenancy.budget_clock_offset_ms"), "{error}");
}

#[test]
fn embedding_models_serve_only_embeddings() {
    let with = |extra: &str| format!("{MINIMAL}\n[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9100/v1\"\n{extra}");
    let good = with("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"sim\"\ninput_usd_per_mtok = 0.02\n");
    let config = parse(&good).map_err(|error| error.to_string());
    let price = config.as_ref().ok().and_then(|config| config.gateway.policy.model("e")).and_then(|model| model.price);
    assert_eq!(price.map(|price| (price.input_usd_per_mtok, price.output_usd_per_mtok)), Some((0.02, 0.0)), "{config:?}");
    for (extra, key) in [
        ("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"claude\"\n", "models[1].provider"),
        ("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"sim\"\nfallbacks = [\"m\"]\n", "models[1].fallbacks"),
        ("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"sim\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n", "models[1].output_usd_per_mtok"),
        ("[[models]]\nname = \"e\"\nkind = \"picture\"\nprovider = \"sim\"\n", "kind"),
    ] {
        let error = error_of(&with(extra));
        assert!(error.contains(key), "{key}: {error}");
    }
    // A chat model may not fall back to an embedding model, nor may routing prefer one.
    let fallback = with("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"sim\"\n").replace("provider = \"sim\"\n[routing]", "provider = \"sim\"\nfallbacks = [\"e\"]\n[routing]");
    assert!(error_of(&fallback).contains("models[0].fallbacks[0]"));
    let preferred = with("[[models]]\nname = \"e\"\nkind = \"embedding\"\nprovider = \"sim\"\n").replace("preference = [\"m\"]", "preference = [\"m\", \"e\"]");
    assert!(error_of(&preferred).contains("routing.preference[1]"));
}

#[test]
fn the_semantic_layers_bounds_are_checked_by_key() {
    let semantic = |lines: &str| format!("{MINIMAL}\n[semantic_cache]\nenabled = true\n{lines}\n");
    let config = parse(&semantic("lookup_budget = \"12ms\"\nstore_queue = 8")).map_err(|error| error.to_string());
    let settings = config.as_ref().ok().and_then(|config| config.gateway.semantic_cache.clone());
    assert_eq!(settings.as_ref().map(|settings| (settings.lookup_budget, settings.store_queue)), Some((Some(Duration::from_millis(12)), 8)), "{config:?}");
    let auto = parse(&semantic("")).ok().and_then(|config| config.gateway.semantic_cache).map(|settings| settings.lookup_budget);
    assert_eq!(auto, Some(None), "auto by default");
    for (lines, key) in [
        ("lookup_budget = \"soon\"", "semantic_cache.lookup_budget"),
        ("lookup_budget = \"0ms\"", "semantic_cache.lookup_budget"),
        ("store_queue = 0", "semantic_cache.store_queue"),
        ("[embedding]\ncores = 4096", "embedding.cores"),
        ("[embedding]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\ncores = 1", "embedding.cores"),
        ("[embedding]\nbackend = \"remote\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\nweights = \"int8\"", "embedding.weights"),
    ] {
        let error = error_of(&semantic(lines));
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn the_local_models_weight_format_is_a_setting() {
    let weights_of = |lines: &str| {
        let config = parse(&format!("{MINIMAL}\n[semantic_cache]\nenabled = true\n[embedding]\n{lines}\n")).map_err(|error| error.to_string());
        match config.map(|config| config.gateway.semantic_cache.map(|semantic| semantic.embedder.backend)) {
            Ok(Some(switchyard_actors::embed::BackendSettings::Local(local))) => Ok(local.weights),
            other => Err(format!("{other:?}")),
        }
    };
    use switchyard_actors::embed::WeightFormat;
    assert_eq!(weights_of("weights = \"f32\""), Ok(WeightFormat::F32));
    assert_eq!(weights_of("weights = \"int8\""), Ok(WeightFormat::Int8));
    assert_eq!(weights_of(""), Ok(WeightFormat::default()));
    let error = error_of(&format!("{MINIMAL}\n[semantic_cache]\nenabled = true\n[embedding]\nweights = \"int4\"\n"));
    for part in ["embedding.weights", "int4", "f32", "int8"] {
        assert!(error.contains(part), "{part}: {error}");
    }
}

#[test]
fn guardrails_compile_and_every_mistake_names_its_key() {
    let good = format!(
        "{MINIMAL}\n[[guardrails]]\nname = \"pii\"\nmodels = [\"m\"]\nmax_answer_characters = 100\n[guardrails.pii]\nemail = \"redact\"\npayment_card = \"block\"\n\
         [guardrails.injection]\nthreshold = 1.5\naction = \"log\"\n[guardrails.deny]\nwords = [\"nightingale\"]\n"
    );
    let config = parse(&good).map_err(|error| error.to_string());
    let guardrails = config.as_ref().map(|config| config.gateway.guardrails.len());
    assert_eq!(guardrails, Ok(1), "{config:?}");
    for (tail, named) in [
        ("[[guardrails]]\nname = \"g\"\n[guardrails.pii]\nemail_address = \"redact\"\n", "guardrails[0].pii.email_address"),
        ("[[guardrails]]\nname = \"g\"\nmodels = [\"nope\"]\n", "guardrails[0].models"),
        ("[[guardrails]]\nname = \"g\"\n[guardrails.injection]\nthreshold = 0.0\n", "guardrails[0].injection.threshold"),
        ("[[guardrails]]\nname = \"g\"\nmax_answer_characters = 0\n", "guardrails[0].max_answer_characters"),
        ("[[guardrails]]\nname = \"g\"\n[guardrails.deny]\nwords = [\" \"]\n", "deny phrase 0 of deny words in guardrail \"g\" is empty"),
        ("[[guardrails]]\nname = \"g\"\n[[guardrails]]\nname = \"g\"\n", "guardrails[1].name"),
        ("[[guardrails]]\nname = \"g\"\ncolour = \"red\"\n", "colour"),
    ] {
        let error = error_of(&format!("{MINIMAL}\n{tail}"));
        assert!(error.contains(named), "{named}: {error}");
    }
}

#[test]
fn experiments_are_checked_and_every_mistake_names_its_key() {
    let models = format!("{MINIMAL}\n[[models]]\nname = \"n\"\nprovider = \"sim\"\n");
    let good = format!(
        "{models}\n[[experiments]]\nname = \"e\"\nroute = \"m\"\nvariants = [{{ name = \"control\", model = \"m\", weight = 9 }}, {{ name = \"canary\", model = \"n\", weight = 1 }}]\nrollback = {{ margin = 0.1, window = \"5m\" }}\n"
    );
    let config = parse(&good).map_err(|error| error.to_string());
    assert_eq!(config.as_ref().map(|config| config.gateway.experiments.len()), Ok(1), "{config:?}");
    let variants = "variants = [{ name = \"a\", model = \"m\", weight = 1 }, { name = \"b\", model = \"n\", weight = 1 }]";
    for (tail, named) in [
        (format!("name = \"e\"\nroute = \"nope\"\n{variants}"), "experiments[0].route"),
        ("name = \"e\"\nroute = \"m\"\nvariants = [{ name = \"a\", model = \"m\", weight = 1 }]".to_owned(), "experiments[0].variants"),
        ("name = \"e\"\nroute = \"m\"\nvariants = [{ name = \"a\", model = \"m\", weight = 1 }, { name = \"a\", model = \"n\", weight = 1 }]".to_owned(), "experiments[0].variants[1].name"),
        ("name = \"e\"\nroute = \"m\"\nvariants = [{ name = \"a\", model = \"m\", weight = 1 }, { name = \"b\", model = \"x\", weight = 1 }]".to_owned(), "experiments[0].variants[1].model"),
        ("name = \"e\"\nroute = \"m\"\nvariants = [{ name = \"a\", model = \"m\", weight = 0 }, { name = \"b\", model = \"n\", weight = 0 }]".to_owned(), "experiments[0].variants"),
        (format!("name = \"e\"\nroute = \"m\"\n{variants}\nrollback = {{ margin = 1.5, window = \"1m\" }}"), "experiments[0].rollback.margin"),
    ] {
        let error = error_of(&format!("{models}\n[[experiments]]\n{tail}\n"));
        assert!(error.contains(named), "{named}: {error}");
    }
}
