//! Who may do what on the control socket.
//!
//! Two roles, decided from the peer's kernel credentials:
//! - **submitter** (members of `socket_group`): submit, list, status, report,
//!   metrics, why;
//! - **admin** (root, members of `admin_group`): everything a submitter may,
//!   plus what changes enforcement itself: mode, revoke, revoke --all.
//!
//! `unload` is not a socket operation: it removes the bpffs pins directly and
//! needs root on the host.
use super::{
    protocol::{RefusalKind, Request},
    server::Peer,
};

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Submit artifacts and read the agent's state.
    Submitter,
    /// Also change enforcement: mode, revoke, revoke --all.
    Admin,
}

/// The role each request needs. Exhaustive on purpose: a new operation does
/// not compile until it is given one.
pub fn required_role(request: &Request) -> Role {
    match request {
        // A revocation list, like an artifact, carries its own authority
        // (its signature), and it only ever takes permits away.
        Request::Submit { .. }
        | Request::RevocationList { .. }
        | Request::List {}
        | Request::Status {}
        | Request::Report { .. }
        | Request::Metrics { .. }
        | Request::Why { .. } => Role::Submitter,
        Request::SetMode { .. }
        | Request::Revoke { .. }
        | Request::RevokeAll { .. }
        | Request::Unlock { .. }
        | Request::Adopt { .. } => Role::Admin,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{key} names group {name:?}, which does not exist")]
    NoGroup { key: &'static str, name: String },
}

/// A configured group: its name (for messages) and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

impl Group {
    fn resolve(key: &'static str, name: Option<&str>) -> Result<Option<Self>, AccessError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let group = nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| AccessError::NoGroup {
                key,
                name: name.to_owned(),
            })?;
        Ok(Some(Self {
            name: name.to_owned(),
            gid: group.gid.as_raw(),
        }))
    }

    fn has(&self, peer: &Peer) -> bool {
        peer.gid == self.gid || peer.groups.contains(&self.gid)
    }
}

/// The access policy: root is always admin; `admin` members are admins;
/// `submit` members are submitters; everyone else is refused.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `agent.socket_group`.
    pub submit: Option<Group>,
    /// `agent.admin_group`.
    pub admin: Option<Group>,
}

impl Access {
    /// Resolves the configured group names.
    pub fn new(socket_group: Option<&str>, admin_group: Option<&str>) -> Result<Self, AccessError> {
        Ok(Self {
            submit: Group::resolve("agent.socket_group", socket_group)?,
            admin: Group::resolve("agent.admin_group", admin_group)?,
        })
    }

    /// The peer's role, or `None` when it may not use the socket at all.
    pub fn role_of(&self, peer: &Peer) -> Option<Role> {
        if peer.uid == 0 || self.admin.as_ref().is_some_and(|g| g.has(peer)) {
            Some(Role::Admin)
        } else if self.submit.as_ref().is_some_and(|g| g.has(peer)) {
            Some(Role::Submitter)
        } else {
            None
        }
    }

    /// The group the socket file belongs to: submitters' if configured (admins
    /// need to be in it too to open the file), else admins'.
    pub fn socket_gid(&self) -> Option<u32> {
        self.submit.as_ref().or(self.admin.as_ref()).map(|g| g.gid)
    }

    /// Who may do anything at all, for the refusal of a stranger.
    fn describe(&self) -> String {
        let groups: Vec<&str> = [&self.admin, &self.submit]
            .into_iter()
            .flatten()
            .map(|g| g.name.as_str())
            .collect();
        match groups.as_slice() {
            [] => "root".into(),
            [one] => format!("root or members of group {one}"),
            _ => format!("root or members of groups {}", groups.join(", ")),
        }
    }

    /// The refusal of a peer that holds no role at all.
    pub fn stranger(&self, peer: &Peer) -> Denied {
        Denied {
            kind: RefusalKind::Unauthorized,
            message: format!(
                "uid {} may not control authz (allowed: {})",
                peer.uid,
                self.describe()
            ),
        }
    }

    /// Whether `peer` may make `request`; a refusal is one sentence naming
    /// the role needed.
    pub fn authorize(&self, peer: &Peer, request: &Request) -> Result<Role, Denied> {
        let needed = required_role(request);
        match self.role_of(peer) {
            None => Err(self.stranger(peer)),
            Some(role) if role >= needed => Ok(role),
            Some(_) => {
                let who = match &self.admin {
                    Some(g) => format!("root or a member of admin_group {:?}", g.name),
                    None => "root (no admin_group is configured)".into(),
                };
                Err(Denied {
                    kind: RefusalKind::Forbidden,
                    message: format!(
                        "`{}` changes enforcement and needs {who}; uid {} may only submit, list, status and report",
                        op_name(request),
                        peer.uid
                    ),
                })
            }
        }
    }
}

/// A refused request: a stable kind (`unauthorized`: no role at all;
/// `forbidden`: the request needs a role the peer lacks) and one sentence.
pub type Denied = super::protocol::ErrorBody;

/// The operation as the CLI spells it.
pub fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Submit { .. } => "submit",
        Request::List {} => "list",
        Request::Revoke { .. } => "revoke",
        Request::RevokeAll { .. } => "revoke --all",
        Request::RevocationList { .. } => "submit (revocation list)",
        Request::Status {} => "status",
        Request::SetMode { .. } => "mode",
        Request::Report { .. } => "report",
        Request::Metrics { .. } => "status --format openmetrics",
        Request::Why { .. } => "why",
        Request::Unlock { .. } => "lockdown unlock",
        Request::Adopt { .. } => "lockdown adopt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforcer::Mode;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: None,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn group(name: &str, gid: u32) -> Option<Group> {
        Some(Group {
            name: name.into(),
            gid,
        })
    }

    fn every_request() -> Vec<Request> {
        vec![
            Request::Submit {
                artifact: String::new(),
            },
            Request::RevocationList {
                list: String::new(),
            },
            Request::List {},
            Request::Status {},
            Request::Report { since: None },
            Request::Metrics {
                format: Default::default(),
            },
            Request::Why {
                path: "/bin/true".into(),
                cgroup: None,
                pid: None,
            },
            Request::SetMode { mode: Mode::Off },
            Request::Revoke {
                id: "ab".into(),
                reason: None,
            },
            Request::RevokeAll { reason: None },
            Request::Unlock {
                statement: String::new(),
            },
            Request::Adopt {
                statement: String::new(),
            },
        ]
    }

    #[test]
    fn the_role_table_separates_submitting_from_changing_enforcement() {
        let needs: Vec<(&str, Role)> = every_request()
            .iter()
            .map(|r| (op_name(r), required_role(r)))
            .collect();
        assert_eq!(
            needs,
            [
                ("submit", Role::Submitter),
                ("submit (revocation list)", Role::Submitter),
                ("list", Role::Submitter),
                ("status", Role::Submitter),
                ("report", Role::Submitter),
                ("status --format openmetrics", Role::Submitter),
                ("why", Role::Submitter),
                ("mode", Role::Admin),
                ("revoke", Role::Admin),
                ("revoke --all", Role::Admin),
                ("lockdown unlock", Role::Admin),
                ("lockdown adopt", Role::Admin),
            ]
        );
    }

    #[test]
    fn roles_come_from_credentials() {
        let access = Access {
            submit: group("authz", 990),
            admin: group("authz-admin", 991),
        };
        assert_eq!(access.role_of(&peer(0, 0, &[])), Some(Role::Admin));
        assert_eq!(access.role_of(&peer(1000, 991, &[])), Some(Role::Admin));
        assert_eq!(
            access.role_of(&peer(1000, 1000, &[990, 991])),
            Some(Role::Admin)
        );
        assert_eq!(access.role_of(&peer(1000, 990, &[])), Some(Role::Submitter));
        assert_eq!(
            access.role_of(&peer(1000, 1000, &[27, 990])),
            Some(Role::Submitter)
        );
        assert_eq!(access.role_of(&peer(1000, 1000, &[27])), None);
        // Nothing configured: root only.
        let root_only = Access::default();
        assert_eq!(root_only.role_of(&peer(0, 0, &[])), Some(Role::Admin));
        assert_eq!(root_only.role_of(&peer(1000, 990, &[990])), None);
    }

    #[test]
    fn a_submitter_is_refused_what_changes_enforcement_and_told_who_may() {
        let access = Access {
            submit: group("authz", 990),
            admin: None,
        };
        let member = peer(1000, 1000, &[990]);
        for request in every_request() {
            let result = access.authorize(&member, &request);
            match required_role(&request) {
                Role::Submitter => assert_eq!(result, Ok(Role::Submitter)),
                Role::Admin => {
                    let Denied { kind, message } = result.unwrap_err();
                    assert_eq!(kind, RefusalKind::Forbidden);
                    assert!(message.contains(op_name(&request)), "{message}");
                    assert!(message.contains("needs root (no admin_group"), "{message}");
                    assert!(message.contains("uid 1000 may only submit"), "{message}");
                }
            }
            assert_eq!(
                access.authorize(&peer(0, 0, &[]), &request),
                Ok(Role::Admin)
            );
        }
        let with_admins = Access {
            admin: group("authz-admin", 991),
            ..access
        };
        let message = with_admins
            .authorize(&member, &Request::RevokeAll { reason: None })
            .unwrap_err()
            .message;
        assert!(
            message.contains("member of admin_group \"authz-admin\""),
            "{message}"
        );
        let admin = peer(1001, 1001, &[991]);
        for request in every_request() {
            assert_eq!(with_admins.authorize(&admin, &request), Ok(Role::Admin));
        }
        let stranger = with_admins
            .authorize(&peer(1002, 1002, &[27]), &Request::Status {})
            .unwrap_err();
        assert_eq!(stranger.kind, RefusalKind::Unauthorized);
        assert!(
            stranger.message.contains("uid 1002"),
            "{}",
            stranger.message
        );
    }

    #[test]
    fn the_socket_file_belongs_to_the_submitters_group_else_the_admins() {
        let both = Access {
            submit: group("authz", 990),
            admin: group("authz-admin", 991),
        };
        assert_eq!(both.socket_gid(), Some(990));
        assert_eq!(
            both.describe(),
            "root or members of groups authz-admin, authz"
        );
        let admins = Access {
            submit: None,
            admin: group("authz-admin", 991),
        };
        assert_eq!(admins.socket_gid(), Some(991));
        assert_eq!(Access::default().socket_gid(), None);
        assert_eq!(Access::default().describe(), "root");
    }
}
