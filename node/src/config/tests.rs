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
        (MINIMAL.replace("kind = \"openai_compatible\"", "kind = \"openai_compatible\"\napi_key_env = \"SWITCHYARD_TEST_SURELY_UNSET\""), "providers[0].api_key_env"),
    ];
    for (toml, key) in cases {
        let error = error_of(&toml);
        assert!(error.starts_with(key), "expected an error naming {key}, got: {error}");
    }
    let error = error_of(&MINIMAL.replace("kind = \"openai_compatible\"", "kind = \"opnai\""));
    assert!(error.contains("opnai"), "{error}");
    let error = error_of(&format!("{MINIMAL}\n[server]\ndrain_timeout = \"soon\"\n"));
    assert!(error.contains("drain_timeout"), "{error}");
}
