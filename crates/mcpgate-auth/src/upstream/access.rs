//! Who may sign in through the upstream IdP: allowed email domains, allowed users, required
//! groups. Rules that are set must all pass; no rule set lets everyone the IdP knows in.

use super::Identity;

#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// The user's *verified* email must be in one of these domains (exact, case-insensitive).
    pub allowed_domains: Vec<String>,
    /// Emails or usernames (case-insensitive).
    pub allowed_users: Vec<String>,
    /// At least one of these must be among the user's groups (exact).
    pub required_groups: Vec<String>,
}

/// Why a sign-in was refused; the text is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity provider did not confirm an email address for this account")]
    NoVerifiedEmail,
    #[error("accounts of the domain {0} may not use this server")]
    Domain(String),
    #[error("this account may not use this server")]
    User,
    #[error("this account is not in a group allowed to use this server")]
    Groups,
}

impl AccessRules {
    /// No rule: anyone the IdP authenticates may sign in.
    pub fn is_open(&self) -> bool {
        self.allowed_domains.is_empty()
            && self.allowed_users.is_empty()
            && self.required_groups.is_empty()
    }

    pub fn check(&self, identity: &Identity) -> Result<(), Refusal> {
        if !self.allowed_domains.is_empty() {
            let email = identity.verified_email().ok_or(Refusal::NoVerifiedEmail)?;
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            if !self
                .allowed_domains
                .iter()
                .any(|allowed| allowed.trim_start_matches('@').eq_ignore_ascii_case(domain))
            {
                return Err(Refusal::Domain(domain.to_ascii_lowercase()));
            }
        }
        if !self.allowed_users.is_empty() {
            let names = [identity.verified_email(), identity.username.as_deref()];
            let allowed = self.allowed_users.iter().any(|user| {
                names
                    .iter()
                    .flatten()
                    .any(|name| name.eq_ignore_ascii_case(user))
            });
            if !allowed {
                return Err(Refusal::User);
            }
        }
        if !self.required_groups.is_empty()
            && !self
                .required_groups
                .iter()
                .any(|group| identity.groups.iter().any(|g| g == group))
        {
            return Err(Refusal::Groups);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: Option<&str>, verified: bool) -> Identity {
        Identity {
            issuer: "https://idp.example".into(),
            subject: "s1".into(),
            email: email.map(str::to_owned),
            email_verified: verified,
            username: Some("octocat".into()),
            name: None,
            groups: vec!["eng".into()],
        }
    }

    #[test]
    fn domains_need_a_verified_email_in_the_list() {
        let rules = AccessRules {
            allowed_domains: vec!["Example.com".into()],
            ..Default::default()
        };
        assert_eq!(rules.check(&identity(Some("a@example.COM"), true)), Ok(()));
        assert_eq!(
            rules.check(&identity(Some("a@example.com"), false)),
            Err(Refusal::NoVerifiedEmail)
        );
        assert_eq!(
            rules.check(&identity(Some("a@evil.example.com"), true)),
            Err(Refusal::Domain("evil.example.com".into()))
        );
        assert_eq!(
            rules.check(&identity(Some("a@example.com.evil"), true)),
            Err(Refusal::Domain("example.com.evil".into()))
        );
        assert_eq!(
            rules.check(&identity(None, true)),
            Err(Refusal::NoVerifiedEmail)
        );
    }

    #[test]
    fn users_and_groups_combine_with_and() {
        let rules = AccessRules {
            allowed_users: vec!["OctoCat".into()],
            required_groups: vec!["ops".into(), "eng".into()],
            ..Default::default()
        };
        assert_eq!(rules.check(&identity(None, false)), Ok(()));
        let mut other = identity(None, false);
        other.username = Some("hubot".into());
        assert_eq!(rules.check(&other), Err(Refusal::User));
        let mut outsider = identity(None, false);
        outsider.groups = vec!["Eng".into()];
        assert_eq!(rules.check(&outsider), Err(Refusal::Groups));
        assert!(!rules.is_open());
        assert!(AccessRules::default().is_open());
    }

    #[test]
    fn an_unverified_email_never_matches_a_user_rule() {
        let rules = AccessRules {
            allowed_users: vec!["boss@example.com".into()],
            ..Default::default()
        };
        let mut id = identity(Some("boss@example.com"), false);
        id.username = None;
        assert_eq!(rules.check(&id), Err(Refusal::User));
    }
}
