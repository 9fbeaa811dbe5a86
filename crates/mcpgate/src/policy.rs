//! Scope policy: which scopes each tool, resource and prompt needs, with a scope hierarchy.
//!
//! Defaults when nothing is configured: read-only tools (`readOnlyHint: true`) need
//! `mcp:tools:read`, other tools `mcp:tools:write`, resources `mcp:resources:read`, prompts
//! `mcp:prompts:read`. `mcp:tools:write` implies `mcp:tools:read`; `mcp:admin` implies all.
//! Configured rules (glob patterns, first match wins) replace the default for what they match.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use mcpgate_auth::{Principal, ScopeSet};

pub const TOOLS_READ: &str = "mcp:tools:read";
pub const TOOLS_WRITE: &str = "mcp:tools:write";
pub const RESOURCES_READ: &str = "mcp:resources:read";
pub const PROMPTS_READ: &str = "mcp:prompts:read";
pub const ADMIN: &str = "mcp:admin";
/// In a hierarchy, a scope that implies this implies every scope.
pub const EVERYTHING: &str = "*";

/// One configured rule: a glob over tool names, resource URIs or prompt names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "match")]
    pub pattern: String,
    pub scopes: Vec<String>,
}

/// The `[policy]` section of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `scope = ["implied", …]`; merged over the default hierarchy.
    #[serde(default)]
    pub hierarchy: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub tools: Vec<Rule>,
    #[serde(default)]
    pub resources: Vec<Rule>,
    #[serde(default)]
    pub prompts: Vec<Rule>,
}

/// What is being asked for.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    Tool { name: &'a str, read_only: bool },
    Resource { uri: &'a str },
    Prompt { name: &'a str },
}

#[derive(Debug, Clone)]
pub struct ScopePolicy {
    /// For every scope the hierarchy gives implications, everything it implies, transitively.
    /// Worked out once here so that checking a request allocates nothing and hashes nothing
    /// (this runs on every authenticated call, up to three times).
    implied: BTreeMap<String, Implied>,
    baseline: Vec<String>,
    tools: Vec<Rule>,
    resources: Vec<Rule>,
    prompts: Vec<Rule>,
    /// Every scope the policy mentions: the "relevant" scopes repeated in step-up challenges.
    known: BTreeSet<String>,
}

/// What one scope implies through the hierarchy.
#[derive(Debug, Clone, Default)]
struct Implied {
    scopes: BTreeSet<String>,
    /// The scope leads to `*`: it implies every scope.
    everything: bool,
}

/// A principal's scopes with the hierarchy applied: a view over the principal and the policy.
pub struct Grants<'a> {
    /// `None`: the anonymous principal of an unauthenticated server, which holds everything.
    held: Option<&'a ScopeSet>,
    implied: &'a BTreeMap<String, Implied>,
}

impl Grants<'_> {
    pub fn has(&self, scope: &str) -> bool {
        let Some(held) = self.held else {
            return true;
        };
        // `*` means everything only as an implication the operator configured: a token that
        // merely carries a scope named `*` (an IdP may let clients ask for any string) gets
        // nothing from it.
        (scope != EVERYTHING && held.contains(scope))
            || held.iter().filter(|s| *s != EVERYTHING).any(|s| {
                self.implied
                    .get(s)
                    .is_some_and(|i| i.everything || i.scopes.contains(scope))
            })
    }
}

impl ScopePolicy {
    pub fn new(config: &PolicyConfig, baseline: Vec<String>) -> Self {
        let mut hierarchy: HashMap<String, Vec<String>> = HashMap::from([
            (ADMIN.to_owned(), vec![EVERYTHING.to_owned()]),
            (TOOLS_WRITE.to_owned(), vec![TOOLS_READ.to_owned()]),
        ]);
        hierarchy.extend(config.hierarchy.clone());
        let mut known: BTreeSet<String> =
            [TOOLS_READ, TOOLS_WRITE, RESOURCES_READ, PROMPTS_READ, ADMIN]
                .map(str::to_owned)
                .into();
        for rule in config
            .tools
            .iter()
            .chain(&config.resources)
            .chain(&config.prompts)
        {
            known.extend(rule.scopes.iter().cloned());
        }
        for (scope, implied) in &hierarchy {
            known.insert(scope.clone());
            known.extend(implied.iter().filter(|s| *s != EVERYTHING).cloned());
        }
        known.extend(baseline.iter().cloned());
        Self {
            implied: implications(&hierarchy),
            baseline,
            tools: config.tools.clone(),
            resources: config.resources.clone(),
            prompts: config.prompts.clone(),
            known,
        }
    }

    /// The scopes `principal` effectively holds. Unauthenticated servers (stdio, auth off) have
    /// no scopes to enforce: their anonymous principal holds everything.
    pub fn grants<'a>(&'a self, principal: &'a Principal) -> Grants<'a> {
        Grants {
            held: (!principal.is_anonymous()).then_some(&principal.scopes),
            implied: &self.implied,
        }
    }

    /// Every scope the operation needs (the baseline included).
    pub fn required(&self, op: Operation<'_>) -> Vec<String> {
        let mut required: Vec<String> = self.requirements(op).map(str::to_owned).collect();
        required.sort();
        required.dedup();
        required
    }

    /// The scopes `op` needs, baseline first, possibly repeated.
    fn requirements<'a>(&'a self, op: Operation<'_>) -> impl Iterator<Item = &'a str> {
        let (rules, subject, default) = match op {
            Operation::Tool { name, read_only } => (
                &self.tools,
                name,
                if read_only { TOOLS_READ } else { TOOLS_WRITE },
            ),
            Operation::Resource { uri } => (&self.resources, uri, RESOURCES_READ),
            Operation::Prompt { name } => (&self.prompts, name, PROMPTS_READ),
        };
        let rule = rules.iter().find(|r| glob_match(&r.pattern, subject));
        let specific = rule.map(|r| r.scopes.as_slice()).unwrap_or_default();
        self.baseline
            .iter()
            .chain(specific)
            .map(String::as_str)
            .chain(rule.is_none().then_some(default))
    }

    /// `Err(missing)` with the scopes the caller lacks.
    pub fn check(&self, grants: &Grants<'_>, op: Operation<'_>) -> Result<(), Vec<String>> {
        if self.requirements(op).all(|s| grants.has(s)) {
            return Ok(());
        }
        Err(self
            .required(op)
            .into_iter()
            .filter(|s| !grants.has(s))
            .collect())
    }

    /// The baseline needed to use the server at all.
    pub fn check_baseline(&self, grants: &Grants<'_>) -> Result<(), Vec<String>> {
        let missing: Vec<String> = self
            .baseline
            .iter()
            .filter(|s| !grants.has(s))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    pub fn baseline(&self) -> &[String] {
        &self.baseline
    }

    /// The `scope` of a step-up challenge: everything the operation needs, plus the relevant scopes
    /// the caller already holds (clients that replace rather than merge would otherwise lose them).
    pub fn challenge_scope(&self, principal: &Principal, op: Operation<'_>) -> String {
        let mut scopes: BTreeSet<String> = self.required(op).into_iter().collect();
        scopes.extend(
            principal
                .scopes
                .iter()
                .filter(|s| self.known.contains(*s))
                .map(str::to_owned),
        );
        scopes.into_iter().collect::<Vec<_>>().join(" ")
    }
}

/// Everything each scope of `hierarchy` implies, transitively (cycles allowed). Reaching `*`
/// marks the scope as implying everything; `*` itself is not expanded further.
fn implications(hierarchy: &HashMap<String, Vec<String>>) -> BTreeMap<String, Implied> {
    hierarchy
        .keys()
        .map(|scope| {
            let mut implied = Implied::default();
            let mut seen: HashSet<&str> = HashSet::from([scope.as_str()]);
            let mut queue: Vec<&str> = vec![scope.as_str()];
            while let Some(next) = queue.pop() {
                for s in hierarchy.get(next).into_iter().flatten() {
                    if s == EVERYTHING {
                        implied.everything = true;
                    } else if seen.insert(s) {
                        implied.scopes.insert(s.clone());
                        queue.push(s);
                    }
                }
            }
            (scope.clone(), implied)
        })
        .collect()
}

/// Glob matching with `*` (any run, possibly empty) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Byte-wise when both are ASCII (the usual tool names and URIs: no allocation on the request
    // path); by characters otherwise, so that `?` stands for one character, not one byte.
    if pattern.is_ascii() && text.is_ascii() {
        glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?')
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob(&p, &t, '*', '?')
    }
}

fn glob<T: PartialEq + Copy>(p: &[T], t: &[T], any_run: T, any_one: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == any_run {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == any_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &str) -> Principal {
        Principal::from_static_token("t", ScopeSet::parse(scopes))
    }

    #[test]
    fn globs() {
        assert!(glob_match("notes_*", "notes_put"));
        assert!(glob_match("*", ""));
        assert!(glob_match("notes://*", "notes://a/b"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("notes_*", "whoami"));
        assert!(glob_match("*_delete", "notes_delete"));
        assert!(!glob_match("*_delete", "notes_delete_x"));
    }

    #[test]
    fn defaults_follow_annotations_and_kind() {
        let policy = ScopePolicy::new(&PolicyConfig::default(), vec![]);
        let read = Operation::Tool {
            name: "whoami",
            read_only: true,
        };
        let write = Operation::Tool {
            name: "notes_put",
            read_only: false,
        };
        assert_eq!(policy.required(read), [TOOLS_READ]);
        assert_eq!(policy.required(write), [TOOLS_WRITE]);
        assert_eq!(
            policy.required(Operation::Resource { uri: "notes://a" }),
            [RESOURCES_READ]
        );
        assert_eq!(
            policy.required(Operation::Prompt { name: "p" }),
            [PROMPTS_READ]
        );
    }

    #[test]
    fn hierarchy_is_honoured_transitively() {
        let config = PolicyConfig {
            hierarchy: HashMap::from([("notes:owner".to_owned(), vec![TOOLS_WRITE.to_owned()])]),
            ..Default::default()
        };
        let policy = ScopePolicy::new(&config, vec![]);
        let read = Operation::Tool {
            name: "whoami",
            read_only: true,
        };
        let write = Operation::Tool {
            name: "notes_put",
            read_only: false,
        };
        assert!(
            policy
                .check(&policy.grants(&principal(TOOLS_WRITE)), read)
                .is_ok()
        );
        assert!(
            policy
                .check(&policy.grants(&principal("notes:owner")), read)
                .is_ok()
        );
        assert!(
            policy
                .check(&policy.grants(&principal(TOOLS_READ)), write)
                .is_err()
        );
        let admin = principal(ADMIN);
        let admin = policy.grants(&admin);
        assert!(policy.check(&admin, write).is_ok());
        assert!(
            policy
                .check(&admin, Operation::Resource { uri: "x" })
                .is_ok()
        );
        assert!(
            policy
                .check(&policy.grants(&Principal::anonymous()), write)
                .is_ok()
        );
    }

    #[test]
    fn rules_replace_defaults_first_match_wins() {
        let config = PolicyConfig {
            tools: vec![
                Rule {
                    pattern: "notes_delete".into(),
                    scopes: vec!["notes:admin".into()],
                },
                Rule {
                    pattern: "notes_*".into(),
                    scopes: vec!["notes:rw".into()],
                },
            ],
            ..Default::default()
        };
        let policy = ScopePolicy::new(&config, vec!["mcp:connect".into()]);
        assert_eq!(
            policy.required(Operation::Tool {
                name: "notes_delete",
                read_only: false
            }),
            ["mcp:connect", "notes:admin"]
        );
        assert_eq!(
            policy.required(Operation::Tool {
                name: "notes_get",
                read_only: true
            }),
            ["mcp:connect", "notes:rw"]
        );
        let rw = principal("notes:rw");
        let g = policy.grants(&rw);
        assert_eq!(
            policy.check(
                &g,
                Operation::Tool {
                    name: "notes_get",
                    read_only: true
                }
            ),
            Err(vec!["mcp:connect".into()])
        );
        assert_eq!(policy.check_baseline(&g), Err(vec!["mcp:connect".into()]));
    }

    #[test]
    fn challenges_repeat_relevant_held_scopes_only() {
        let policy = ScopePolicy::new(&PolicyConfig::default(), vec![]);
        let p = principal("openid mcp:tools:read mcp:prompts:read");
        let scope = policy.challenge_scope(
            &p,
            Operation::Tool {
                name: "notes_put",
                read_only: false,
            },
        );
        assert_eq!(scope, "mcp:prompts:read mcp:tools:read mcp:tools:write");
    }
}
