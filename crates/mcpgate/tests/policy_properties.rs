//! Property tests for the scope policy: glob rules, the scope hierarchy and step-up challenges.
//! The property the policy must keep: a stricter rule (more required scopes, a larger baseline,
//! fewer implications, fewer held scopes) never accepts what a looser one refuses.

use std::collections::{HashMap, HashSet};

use mcpgate::policy::{
    ADMIN, EVERYTHING, Operation, PolicyConfig, Rule, ScopePolicy, TOOLS_READ, TOOLS_WRITE,
    glob_match,
};
use mcpgate_auth::{Principal, ScopeSet};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Generators: a small alphabet, so that rules, hierarchies and tokens collide often.

fn scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(TOOLS_READ.to_owned()),
        Just(TOOLS_WRITE.to_owned()),
        Just("mcp:resources:read".to_owned()),
        Just("mcp:prompts:read".to_owned()),
        Just(ADMIN.to_owned()),
        Just("notes:owner".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
    ]
}

fn scopes(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(scope(), 0..max)
}

fn pattern() -> impl Strategy<Value = String> {
    "[ab*?_]{0,5}"
}

fn subject() -> impl Strategy<Value = String> {
    "[ab_]{0,5}"
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (pattern(), scopes(3)).prop_map(|(pattern, scopes)| Rule { pattern, scopes }),
        0..4,
    )
}

/// Implications, `*` (everything) included; cycles allowed.
fn hierarchy() -> impl Strategy<Value = HashMap<String, Vec<String>>> {
    prop::collection::hash_map(
        scope(),
        prop::collection::vec(
            prop_oneof![9 => scope(), 1 => Just(EVERYTHING.to_owned())],
            0..3,
        ),
        0..4,
    )
}

fn policy_config() -> impl Strategy<Value = PolicyConfig> {
    (hierarchy(), rules(), rules(), rules()).prop_map(|(hierarchy, tools, resources, prompts)| {
        PolicyConfig {
            hierarchy,
            tools,
            resources,
            prompts,
        }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Tool(String, bool),
    Resource(String),
    Prompt(String),
}

impl Op {
    fn as_operation(&self) -> Operation<'_> {
        match self {
            Op::Tool(name, read_only) => Operation::Tool {
                name,
                read_only: *read_only,
            },
            Op::Resource(uri) => Operation::Resource { uri },
            Op::Prompt(name) => Operation::Prompt { name },
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (subject(), any::<bool>()).prop_map(|(n, r)| Op::Tool(n, r)),
        subject().prop_map(Op::Resource),
        subject().prop_map(Op::Prompt),
    ]
}

fn principal(scopes: &[String]) -> Principal {
    Principal::from_static_token("p", scopes.iter().cloned().collect::<ScopeSet>())
}

fn allowed(policy: &ScopePolicy, held: &[String], op: &Op) -> bool {
    policy
        .check(&policy.grants(&principal(held)), op.as_operation())
        .is_ok()
}

/// The scopes reachable from `held` through `hierarchy`, and whether `*` is among them.
fn closure(hierarchy: &HashMap<String, Vec<String>>, held: &[String]) -> (HashSet<String>, bool) {
    let mut seen = HashSet::new();
    let mut everything = false;
    // A held scope named `*` is no implication: it grants nothing by itself.
    let mut queue: Vec<String> = held.iter().filter(|s| *s != EVERYTHING).cloned().collect();
    while let Some(s) = queue.pop() {
        if s == EVERYTHING {
            everything = true;
        } else if seen.insert(s.clone())
            && let Some(implied) = hierarchy.get(&s)
        {
            queue.extend(implied.iter().cloned());
        }
    }
    (seen, everything)
}

fn with_defaults(config: &PolicyConfig) -> HashMap<String, Vec<String>> {
    let mut h = HashMap::from([
        (ADMIN.to_owned(), vec![EVERYTHING.to_owned()]),
        (TOOLS_WRITE.to_owned(), vec![TOOLS_READ.to_owned()]),
    ]);
    h.extend(config.hierarchy.clone());
    h
}

// ---------------------------------------------------------------------------------------------
// Globs

/// Reference semantics of `*` (any run) and `?` (one character), by exhaustive recursion.
fn glob_reference(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| glob_reference(rest, &t[i..])),
        Some(('?', rest)) => !t.is_empty() && glob_reference(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && glob_reference(rest, &t[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn globs_follow_the_reference(pattern in "[ab*?é]{0,8}", text in "[abé]{0,8}") {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(glob_match(&pattern, &text), glob_reference(&p, &t));
    }

    /// A wider pattern (`*` inserted, or a literal replaced by `?`) matches everything the
    /// narrower one does; a pattern without wildcards matches only itself.
    #[test]
    fn globs_are_monotone(
        pattern in "[ab*?]{0,6}",
        text in "[ab]{0,6}",
        at in any::<prop::sample::Index>(),
    ) {
        let chars: Vec<char> = pattern.chars().collect();
        let mut starred = chars.clone();
        starred.insert(at.index(chars.len() + 1), '*');
        let starred: String = starred.into_iter().collect();
        let mut questioned = chars.clone();
        if !questioned.is_empty() {
            let i = at.index(questioned.len());
            if questioned[i] != '*' {
                questioned[i] = '?';
            }
        }
        let questioned: String = questioned.into_iter().collect();
        if glob_match(&pattern, &text) {
            prop_assert!(glob_match(&starred, &text));
            prop_assert!(glob_match(&questioned, &text));
        }
        if !pattern.contains(['*', '?']) {
            prop_assert_eq!(glob_match(&pattern, &text), pattern == text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hierarchy and rules

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Holding more scopes never loses access.
    #[test]
    fn more_scopes_never_refuse_more(
        config in policy_config(),
        baseline in scopes(2),
        held in scopes(4),
        extra in scopes(3),
        op in op(),
    ) {
        let policy = ScopePolicy::new(&config, baseline);
        let more: Vec<String> = held.iter().chain(&extra).cloned().collect();
        if allowed(&policy, &held, &op) {
            prop_assert!(allowed(&policy, &more, &op));
        }
    }

    /// A rule that requires more scopes (same patterns, same order) never accepts what the
    /// looser rule refuses; nor does a larger baseline.
    #[test]
    fn stricter_rules_never_accept_more(
        config in policy_config(),
        baseline in scopes(2),
        more_baseline in scopes(2),
        added in prop::collection::vec(scopes(2), 4),
        held in scopes(5),
        op in op(),
    ) {
        let loose = ScopePolicy::new(&config, baseline.clone());
        let mut stricter = config.clone();
        for (i, rule) in stricter
            .tools
            .iter_mut()
            .chain(stricter.resources.iter_mut())
            .chain(stricter.prompts.iter_mut())
            .enumerate()
        {
            rule.scopes.extend(added[i % added.len()].iter().cloned());
        }
        let strict = ScopePolicy::new(
            &stricter,
            baseline.iter().chain(&more_baseline).cloned().collect(),
        );
        if allowed(&strict, &held, &op) {
            prop_assert!(allowed(&loose, &held, &op));
        }
        let holder = principal(&held);
        let grants_loose = loose.grants(&holder);
        let grants_strict = strict.grants(&holder);
        if strict.check_baseline(&grants_strict).is_ok() {
            prop_assert!(loose.check_baseline(&grants_loose).is_ok());
        }
    }

    /// More implications in the hierarchy never refuse what fewer accepted. (A configured key
    /// replaces the default entry for that key, as documented, so the wider hierarchy starts a
    /// new key from its effective implications.)
    #[test]
    fn wider_hierarchies_never_refuse_more(
        config in policy_config(),
        more in hierarchy(),
        baseline in scopes(2),
        held in scopes(4),
        op in op(),
    ) {
        let narrow = ScopePolicy::new(&config, baseline.clone());
        let mut wider = config.clone();
        let effective = with_defaults(&config);
        for (scope, implied) in more {
            wider
                .hierarchy
                .entry(scope.clone())
                .or_insert_with(|| effective.get(&scope).cloned().unwrap_or_default())
                .extend(implied);
        }
        let wide = ScopePolicy::new(&wider, baseline);
        if allowed(&narrow, &held, &op) {
            prop_assert!(allowed(&wide, &held, &op));
        }
    }

    /// A principal holds exactly the closure of its scopes under the hierarchy (defaults
    /// included); reaching `*` means everything. Cycles terminate.
    #[test]
    fn grants_are_the_hierarchy_closure(
        config in policy_config(),
        held in scopes(4),
        probe in prop_oneof![scope(), Just("zzz".to_owned())],
    ) {
        let policy = ScopePolicy::new(&config, Vec::new());
        let holder = principal(&held);
        let grants = policy.grants(&holder);
        let (closure, everything) = closure(&with_defaults(&config), &held);
        prop_assert_eq!(grants.has(&probe), everything || closure.contains(&probe));
    }

    /// A token carrying a scope literally named `*` gets nothing more for it.
    #[test]
    fn a_held_star_grants_nothing(config in policy_config(), held in scopes(4), op in op()) {
        let policy = ScopePolicy::new(&config, Vec::new());
        let mut starred = held.clone();
        starred.push(EVERYTHING.to_owned());
        prop_assert_eq!(allowed(&policy, &starred, &op), allowed(&policy, &held, &op));
    }

    /// What an operation requires is the baseline plus the first matching rule's scopes (or the
    /// default); a step-up challenge always names all of it, and the anonymous principal of an
    /// unauthenticated server passes everything.
    #[test]
    fn requirements_and_challenges(
        config in policy_config(),
        baseline in scopes(2),
        held in scopes(4),
        op in op(),
    ) {
        let policy = ScopePolicy::new(&config, baseline.clone());
        let required = policy.required(op.as_operation());
        for b in &baseline {
            prop_assert!(required.contains(b));
        }
        let challenge = policy.challenge_scope(&principal(&held), op.as_operation());
        let challenged: HashSet<&str> = challenge.split(' ').collect();
        for r in &required {
            prop_assert!(challenged.contains(r.as_str()), "{} missing from {:?}", r, challenge);
        }
        match policy.check(&policy.grants(&principal(&held)), op.as_operation()) {
            Ok(()) => {}
            Err(missing) => {
                prop_assert!(!missing.is_empty());
                for m in &missing {
                    prop_assert!(required.contains(m));
                }
            }
        }
        prop_assert!(policy
            .check(&policy.grants(&Principal::anonymous()), op.as_operation())
            .is_ok());
        // `mcp:admin` implies everything unless a configured hierarchy redefines it.
        if !config.hierarchy.contains_key(ADMIN) {
            prop_assert!(allowed(&policy, &[ADMIN.to_owned()], &op));
        }
    }
}

/// The documented merge: a configured key replaces the default entry for that key. Found by
/// `wider_hierarchies_never_refuse_more` before it accounted for it; kept as the statement of
/// the rule (docs/configuration.md, "Hierarchy").
#[test]
fn a_configured_key_replaces_the_default_entry() {
    let config = PolicyConfig {
        hierarchy: HashMap::from([(ADMIN.to_owned(), vec![])]),
        ..PolicyConfig::default()
    };
    let policy = ScopePolicy::new(&config, Vec::new());
    let admin = [ADMIN.to_owned()];
    assert!(!allowed(&policy, &admin, &Op::Resource(String::new())));
    let default = ScopePolicy::new(&PolicyConfig::default(), Vec::new());
    assert!(allowed(&default, &admin, &Op::Resource(String::new())));
}
