//! Micro-benchmarks of scope policy evaluation (what every authenticated tools/call pays after the
//! verifier): expanding a principal's grants through the hierarchy, checking an operation with the
//! default rules and with a configured rule list, and building a step-up challenge's scope.
//!
//!   cargo bench -p mcpgate --bench policy
use criterion::{Criterion, criterion_group, criterion_main};
use mcpgate::policy::{Operation, PolicyConfig, Rule, ScopePolicy};
use mcpgate_auth::{Principal, ScopeSet};

fn principal(scopes: &str) -> Principal {
    let mut p = Principal::from_static_token("bench", ScopeSet::parse(scopes));
    p.issuer = "https://idp.example.com".into();
    p
}

fn configured() -> PolicyConfig {
    let rule = |pattern: &str, scopes: &[&str]| Rule {
        pattern: pattern.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    PolicyConfig {
        hierarchy: [(
            "repo:admin".to_string(),
            vec!["repo:write".to_string(), "repo:read".to_string()],
        )]
        .into(),
        tools: vec![
            rule("admin_*", &["mcp:admin"]),
            rule("repo_delete*", &["repo:admin"]),
            rule("repo_write*", &["repo:write"]),
            rule("repo_*", &["repo:read"]),
            rule("search_?", &["mcp:tools:read"]),
        ],
        resources: vec![rule("notes://*", &["mcp:resources:read"])],
        prompts: vec![],
    }
}

fn policy(c: &mut Criterion) {
    let defaults = ScopePolicy::new(&PolicyConfig::default(), vec![]);
    let reader = principal("mcp:tools:read");
    let writer = principal("openid email mcp:tools:write");
    let whoami = Operation::Tool {
        name: "whoami",
        read_only: true,
    };
    let put = Operation::Tool {
        name: "notes_put",
        read_only: false,
    };

    c.bench_function("policy_default_grants_and_check_allowed", |b| {
        b.iter(|| {
            let grants = defaults.grants(&writer);
            defaults.check(&grants, whoami).unwrap()
        })
    });
    c.bench_function("policy_default_check_refused", |b| {
        b.iter(|| {
            let grants = defaults.grants(&reader);
            defaults.check(&grants, put).unwrap_err()
        })
    });
    c.bench_function("policy_step_up_challenge_scope", |b| {
        b.iter(|| defaults.challenge_scope(&reader, put))
    });

    let rules = ScopePolicy::new(&configured(), vec!["mcp:tools:read".into()]);
    let admin = principal("repo:admin mcp:tools:read");
    let delete = Operation::Tool {
        name: "repo_delete_branch",
        read_only: false,
    };
    let unmatched = Operation::Tool {
        name: "some_other_tool_with_a_long_name",
        read_only: true,
    };
    c.bench_function("policy_rules_hierarchy_check", |b| {
        b.iter(|| {
            let grants = rules.grants(&admin);
            rules.check(&grants, delete).unwrap()
        })
    });
    c.bench_function("policy_rules_no_match_falls_back", |b| {
        b.iter(|| {
            let grants = rules.grants(&admin);
            rules.check(&grants, unmatched).unwrap()
        })
    });
}

criterion_group!(benches, policy);
criterion_main!(benches);
