//! Property tests for the matching rules a security decision rests on: redirect-URI matching
//! (exact, except loopback on any port), resource/audience normalisation, scope sets and the
//! registration allow-list globs. The common thread: a stricter rule never accepts what a looser
//! one refuses, normalising twice changes nothing, and the loopback relaxation never reaches a
//! host that is not loopback.

use mcpgate_auth::ScopeSet;
use mcpgate_auth::resource::audience::{AudiencePolicy, normalise_resource};
use mcpgate_auth::server::clients::{
    AuthMethod, ClientKind, ResolvedClient, is_loopback_redirect, redirect_uri_matches,
};
use mcpgate_auth::server::register::glob_match;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Generators

fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}"
}

/// Hosts of every kind, loopback or not, in various spellings.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("localhost".to_owned()),
        Just("LocalHost".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("127.1".to_owned()),
        Just("127.255.0.9".to_owned()),
        Just("[::1]".to_owned()),
        Just("[0:0:0:0:0:0:0:1]".to_owned()),
        Just("0x7f.0.0.1".to_owned()),
        Just("2130706433".to_owned()),
        Just("localhost.evil.example".to_owned()),
        Just("127.0.0.1.nip.io".to_owned()),
        Just("localhost.".to_owned()),
        Just("[::ffff:127.0.0.1]".to_owned()),
        Just("0.0.0.0".to_owned()),
        Just("10.0.0.1".to_owned()),
        Just("[::2]".to_owned()),
        (label(), label()).prop_map(|(a, b)| format!("{a}.{b}")),
        label(),
    ]
}

fn scheme() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("http"),
        Just("https"),
        Just("HTTP"),
        Just("com.example.app")
    ]
}

fn port() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![Just(None), any::<u16>().prop_map(Some), Just(Some(80))]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".to_owned()),
        Just("/cb".to_owned()),
        Just("/cb/".to_owned()),
        Just("/CB".to_owned()),
        Just("/a/../cb".to_owned()),
        Just("/%63b".to_owned()),
        Just("//cb".to_owned()),
        "(/[a-zA-Z0-9._~%-]{0,5}){1,3}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("?".to_owned()),
        Just("?x=1".to_owned()),
        Just("#frag".to_owned()),
        Just("?x=1#f".to_owned()),
    ]
}

fn userinfo() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => Just("user@".to_owned()),
        1 => Just("user:pw@".to_owned()),
        1 => Just(":pw@".to_owned()),
    ]
}

/// A URI built from parts, with the parts kept for reasoning.
fn uri() -> impl Strategy<Value = String> {
    (scheme(), userinfo(), host(), port(), path(), query()).prop_map(
        |(scheme, user, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{user}{host}{port}{path}{query}")
        },
    )
}

/// Any string at all, or a URI-shaped one.
fn any_uri() -> impl Strategy<Value = String> {
    prop_oneof![3 => uri(), 1 => ".{0,40}"]
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fn client(redirect_uris: Vec<String>) -> ResolvedClient {
    ResolvedClient {
        client_id: "c".into(),
        name: None,
        redirect_uris,
        auth_method: AuthMethod::None,
        grant_types: vec!["authorization_code".into()],
        scope: None,
        secret_hash: None,
        jwks_uri: None,
        kind: ClientKind::MetadataDocument,
    }
}

// ---------------------------------------------------------------------------------------------
// Redirect URIs

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The exact rule is the stricter one: whatever it accepts, the matcher accepts.
    #[test]
    fn exact_match_is_always_accepted(uri in any_uri()) {
        prop_assert!(redirect_uri_matches(&uri, &uri));
    }

    /// Anything but byte equality is accepted only through the loopback relaxation: both URIs
    /// plain-http loopback, same host, path and query, no fragment, no credentials. Only the port
    /// may differ.
    #[test]
    fn relaxation_is_loopback_only(registered in any_uri(), requested in any_uri()) {
        if redirect_uri_matches(&registered, &requested) && registered != requested {
            let reg = url::Url::parse(&registered).unwrap();
            let req = url::Url::parse(&requested).unwrap();
            prop_assert!(is_loopback_redirect(&reg) && is_loopback_redirect(&req));
            prop_assert_eq!(reg.scheme(), "http");
            prop_assert_eq!(req.scheme(), "http");
            prop_assert!(req.host().as_ref().is_some_and(is_loopback_host));
            prop_assert_eq!(reg.host(), req.host());
            prop_assert_eq!(reg.path(), req.path());
            prop_assert_eq!(reg.query(), req.query());
            prop_assert!(req.fragment().is_none());
            prop_assert!(req.username().is_empty() || req.username() == reg.username());
            prop_assert!(req.password().is_none());
            // With the port put back, the two are the same URL.
            let mut same = req.clone();
            same.set_port(reg.port()).unwrap();
            prop_assert_eq!(same.as_str(), reg.as_str());
        }
    }

    /// A registered URI whose host is not loopback accepts exactly itself, whatever the port.
    #[test]
    fn non_loopback_hosts_match_exactly(
        registered in uri(),
        requested in uri(),
    ) {
        let reg_loopback = url::Url::parse(&registered)
            .ok()
            .is_some_and(|u| is_loopback_redirect(&u));
        if !reg_loopback {
            prop_assert_eq!(
                redirect_uri_matches(&registered, &requested),
                registered == requested
            );
        }
    }

    /// Changing only the port of a plain-http loopback URI keeps it matching; for any other URI
    /// a different port is refused.
    #[test]
    fn ports_matter_only_off_loopback(
        scheme in prop_oneof![Just("http"), Just("https")],
        host in host(),
        a in 1u16..,
        b in 1u16..,
        path in path(),
    ) {
        let registered = format!("{scheme}://{host}:{a}{path}");
        let requested = format!("{scheme}://{host}:{b}{path}");
        let Ok(reg) = url::Url::parse(&registered) else { return Ok(()) };
        let matches = redirect_uri_matches(&registered, &requested);
        if is_loopback_redirect(&reg) {
            prop_assert!(matches, "{registered} vs {requested}");
        } else {
            prop_assert_eq!(matches, a == b || registered == requested);
        }
    }

    /// Registering more URIs never makes a client refuse a redirect it accepted.
    #[test]
    fn more_registrations_accept_more(
        fewer in prop::collection::vec(uri(), 0..4),
        extra in prop::collection::vec(uri(), 0..3),
        requested in any_uri(),
    ) {
        let small = client(fewer.clone());
        let large = client(fewer.into_iter().chain(extra).collect());
        if small.allows_redirect(&requested) {
            prop_assert!(large.allows_redirect(&requested));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resource / audience normalisation

fn resource() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("http"), Just("https"), Just("HTTPS"), Just("api")],
        host(),
        port(),
        path(),
        query(),
    )
        .prop_map(|(scheme, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        })
}

fn any_resource() -> impl Strategy<Value = String> {
    prop_oneof![4 => resource(), 1 => ".{0,40}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Normalising is idempotent, and its output is an http(s) URL without a fragment or a
    /// trailing slash.
    #[test]
    fn normalisation_is_idempotent(value in any_resource()) {
        if let Some(once) = normalise_resource(&value) {
            let twice = normalise_resource(&once);
            prop_assert_eq!(twice.as_deref(), Some(once.as_str()), "{}", value);
            let url = url::Url::parse(&once).unwrap();
            prop_assert!(matches!(url.scheme(), "http" | "https"));
            prop_assert!(url.fragment().is_none());
            prop_assert!(url.query().is_some() || !once.ends_with('/'), "{}", once);
        }
    }

    /// Normalisation never changes which host, port or path a URL names (beyond the trailing
    /// slash and default port).
    #[test]
    fn normalisation_keeps_the_origin(value in any_resource()) {
        if let Some(normal) = normalise_resource(&value) {
            let before = url::Url::parse(&value).unwrap();
            let after = url::Url::parse(&normal).unwrap();
            prop_assert_eq!(before.host_str(), after.host_str());
            prop_assert_eq!(before.port_or_known_default(), after.port_or_known_default());
            prop_assert_eq!(before.scheme(), after.scheme());
            prop_assert_eq!(before.query(), after.query());
            prop_assert_eq!(
                before.path().trim_end_matches('/'),
                after.path().trim_end_matches('/')
            );
        }
    }

    /// A policy accepts each of its own resources (in any spelling that normalises the same), and
    /// a policy with more resources or identifiers accepts everything a smaller one does.
    #[test]
    fn audience_policies_are_monotone(
        resources in prop::collection::vec(any_resource(), 0..4),
        extra in prop::collection::vec(any_resource(), 0..3),
        ids in prop::collection::vec(".{1,12}", 0..2),
        audience in any_resource(),
    ) {
        let small = AudiencePolicy::new(resources.clone(), ids.clone());
        let large = AudiencePolicy::new(
            resources.iter().cloned().chain(extra.iter().cloned()),
            ids.iter().cloned().chain(extra.iter().cloned()),
        );
        if small.accepts(&audience) {
            prop_assert!(large.accepts(&audience));
        }
        for r in &resources {
            if let Some(n) = normalise_resource(r) {
                prop_assert!(small.accepts(r));
                prop_assert!(small.accepts(&n));
            }
        }
        // An audience is accepted only as an identifier (byte for byte) or as a resource that
        // normalises to one of ours.
        if small.accepts(&audience) {
            let by_id = ids.contains(&audience);
            let by_resource = normalise_resource(&audience).is_some_and(|n| {
                resources.iter().any(|r| normalise_resource(r).as_deref() == Some(n.as_str()))
            });
            prop_assert!(by_id || by_resource);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scope sets

fn scope_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mcp:tools:read".to_owned()),
        Just("mcp:tools:write".to_owned()),
        Just("mcp:admin".to_owned()),
        "[!#-\\[\\]-~]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The wire form round-trips, whatever the spacing.
    #[test]
    fn scope_sets_round_trip(tokens in prop::collection::vec(scope_token(), 0..6), gaps in prop::collection::vec(1usize..4, 6)) {
        let mut wire = String::new();
        for (i, t) in tokens.iter().enumerate() {
            wire.push_str(&" ".repeat(gaps[i]));
            wire.push_str(t);
        }
        let set = ScopeSet::parse(&wire);
        prop_assert_eq!(ScopeSet::parse(&set.to_string()), set.clone());
        for t in &tokens {
            prop_assert!(set.contains(t));
        }
        prop_assert!(!set.contains(""));
    }

    /// Set inclusion: a set holds itself, a union holds both parts, and inclusion is transitive.
    #[test]
    fn superset_is_monotone(
        a in prop::collection::vec(scope_token(), 0..5),
        b in prop::collection::vec(scope_token(), 0..5),
        c in prop::collection::vec(scope_token(), 0..5),
    ) {
        let sa: ScopeSet = a.iter().cloned().collect();
        let sab: ScopeSet = a.iter().chain(&b).cloned().collect();
        let sabc: ScopeSet = a.iter().chain(&b).chain(&c).cloned().collect();
        prop_assert!(sa.is_superset_of(&sa));
        prop_assert!(sab.is_superset_of(&sa));
        prop_assert!(sabc.is_superset_of(&sab) && sabc.is_superset_of(&sa));
        if sa.is_superset_of(&sab) {
            prop_assert_eq!(sa, sab);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registration allow-list globs (`*` never crosses a URI component boundary)

/// The reference semantics, by exhaustive recursion.
fn glob_reference(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => {
            // The star takes 0..=n characters, none of them a boundary.
            for taken in 0..=t.len() {
                if taken > 0 {
                    let c = t[taken - 1];
                    if matches!(c, '/' | '\\' | '?' | '#' | '@') || c.is_whitespace() {
                        break;
                    }
                }
                if glob_reference(rest, &t[taken..]) {
                    return true;
                }
            }
            false
        }
        Some((c, rest)) => t.first() == Some(c) && glob_reference(rest, &t[1..]),
    }
}

fn glob_alphabet() -> impl Strategy<Value = String> {
    "[ab*/.:?@]{0,10}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn allow_list_globs_follow_the_reference(pattern in glob_alphabet(), text in "[ab/.:?@]{0,10}") {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(glob_match(&pattern, &text), glob_reference(&p, &t), "{:?} vs {:?}", pattern, text);
    }

    /// A wider pattern (one more `*`) accepts everything the narrower one did; a pattern without
    /// `*` accepts only itself.
    #[test]
    fn allow_list_globs_are_monotone(pattern in glob_alphabet(), text in "[ab/.:?@]{0,10}", at in any::<prop::sample::Index>()) {
        let mut wider: Vec<char> = pattern.chars().collect();
        wider.insert(at.index(wider.len() + 1), '*');
        let wider: String = wider.into_iter().collect();
        if glob_match(&pattern, &text) {
            prop_assert!(glob_match(&wider, &text), "{:?} ⊄ {:?} on {:?}", pattern, wider, text);
        }
        if !pattern.contains('*') {
            prop_assert_eq!(glob_match(&pattern, &text), pattern == text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JWKS keys: what a fetched key set may make us accept

fn b64() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("AQAB".to_owned()),
        Just("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".to_owned()),
        Just("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".to_owned()),
        Just("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".to_owned()),
        "[A-Za-z0-9_-]{0,40}",
    ]
}

fn jwk() -> impl Strategy<Value = serde_json::Value> {
    let kty = prop_oneof![Just("RSA"), Just("EC"), Just("OKP"), Just("oct"), Just("x")];
    let crv = prop_oneof![
        Just("P-256"),
        Just("P-384"),
        Just("P-521"),
        Just("Ed25519"),
        Just("X25519")
    ];
    let alg = prop_oneof![
        Just(None),
        Just(Some("RS256")),
        Just(Some("PS384")),
        Just(Some("ES256")),
        Just(Some("ES384")),
        Just(Some("EdDSA")),
        Just(Some("HS256")),
        Just(Some("none")),
        Just(Some("RSA-OAEP")),
    ];
    let use_ = prop_oneof![Just(None), Just(Some("sig")), Just(Some("enc"))];
    (kty, crv, alg, use_, b64(), b64(), b64(), b64()).prop_map(
        |(kty, crv, alg, use_, a, b, c, d)| {
            let mut key = serde_json::json!({
                "kty": kty, "crv": crv, "n": a, "e": b, "x": c, "y": d, "k": a, "kid": "k",
            });
            if let Some(alg) = alg {
                key["alg"] = alg.into();
            }
            if let Some(use_) = use_ {
                key["use"] = use_.into();
            }
            key
        },
    )
}

fn all_algorithms() -> Vec<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm::*;
    vec![
        HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever a key set says and whatever is configured, a key never verifies with HMAC, an
    /// encryption key is never used, and a key's algorithms stay within the allowed ones and its
    /// own family; allowing more algorithms never takes one away.
    #[test]
    fn jwks_keys_stay_pinned(
        key in jwk(),
        allowed in prop::sample::subsequence(all_algorithms(), 0..=12),
        extra in prop::sample::subsequence(all_algorithms(), 0..=12),
    ) {
        use jsonwebtoken::Algorithm::*;
        use mcpgate_auth::resource::jwks::parse_key;
        let parsed = parse_key(&key, &allowed);
        if let Some(parsed) = &parsed {
            prop_assert!(!parsed.algorithms.is_empty());
            prop_assert!(parsed.algorithms.iter().all(|a| allowed.contains(a)));
            prop_assert!(!parsed.algorithms.iter().any(|a| matches!(a, HS256 | HS384 | HS512)));
            prop_assert_ne!(&key["use"], "enc");
            let family: &[jsonwebtoken::Algorithm] = match key["kty"].as_str() {
                Some("RSA") => &[RS256, RS384, RS512, PS256, PS384, PS512],
                Some("EC") => &[ES256, ES384],
                Some("OKP") => &[EdDSA],
                _ => &[],
            };
            prop_assert!(parsed.algorithms.iter().all(|a| family.contains(a)), "{key}");
            if let Some(alg) = key["alg"].as_str() {
                prop_assert_eq!(parsed.algorithms.len(), 1);
                prop_assert_eq!(format!("{:?}", parsed.algorithms[0]), alg);
            }
        }
        let wider: Vec<_> = allowed.iter().chain(&extra).copied().collect();
        if let Some(narrow) = parsed {
            let wide = parse_key(&key, &wider).expect("more algorithms allowed, key lost");
            prop_assert!(narrow.algorithms.iter().all(|a| wide.algorithms.contains(a)));
        }
    }
}
