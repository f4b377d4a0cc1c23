//! The `key`, `delegate` and `artifact` subcommands of `authz-agent`.
//!
//! Each handler returns `anyhow::Result<ExitCode>`: the binary prints an error
//! chain on one line and exits non-zero.
pub mod artifact;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

pub use self::artifact::{run as artifact, ArtifactArgs};
use crate::{
    trust::{
        keys::{self, PublicKey},
        verify::{Limits, Part},
        TrustPolicy,
    },
    vocab::{
        delegation::{Delegation, Grant},
        fields::{ArtifactId, CgroupPath},
        keyid::KeyId,
        text,
        time::{self, Timestamp},
    },
};

/// Default location of the agent's config (holds the `[trust]` table).
pub const DEFAULT_CONFIG: &str = "/etc/authz/agent.toml";

/// Manage signing keys.
///
/// Keys are ed25519. A root key (listed in the agent's `[trust]` config) signs
/// permits and delegations; a team key gets its authority from a delegation.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key pair: NAME.key (secret, mode 0600) and NAME.pub.
    ///
    /// Neither file may exist: keys are never overwritten. Prints the key id
    /// and the lines that make it a trusted root key.
    ///
    /// Example: authz-agent key generate --out /etc/authz/keys/ops-root
    Generate(GenerateArgs),
    /// Print a key file's key id and public key (works on .pub and .key).
    ///
    /// Example: authz-agent key show team-a.pub
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Base name of the files to create: writes NAME.key and NAME.pub.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A .pub or .key file.
    pub file: PathBuf,
}

/// Runs `authz-agent key ...`.
pub fn key(args: KeyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeyCommand::Generate(a) => key_generate(&a),
        KeyCommand::Show(a) => key_show(&a),
    }
}

fn key_generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let key = keys::generate();
    let paths = keys::write_key_pair(&args.out, &key).context("cannot create the key pair")?;
    let public = PublicKey::read(&paths.public)?;
    println!(
        "wrote {} (secret, mode 0600: keep it private) and {} (public)",
        paths.secret.display(),
        paths.public.display()
    );
    println!("key id: {}", public.id);
    println!();
    println!("To trust it as a root key, add this to the agent's config and adjust the limits:");
    println!();
    println!("[[trust.roots]]");
    if let Some(name) = &public.name {
        println!("name = {}", text::quote(name));
    }
    println!("public_key = \"{}\"", hex::encode(public.key.as_bytes()));
    println!("cgroup_prefixes = [\"/\"]");
    println!("max_ttl = \"30d\"");
    Ok(ExitCode::SUCCESS)
}

fn key_show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let (kind, public) = match PublicKey::read(&args.file) {
        Ok(p) => ("public key", p),
        Err(text::FileError::Invalid {
            source: text::ArtifactError::WrongFormat { .. },
            ..
        }) => {
            let secret = keys::read_secret_key(&args.file)?;
            let key = secret.verifying_key();
            let public = PublicKey {
                id: KeyId::of(&key),
                key,
                name: None,
            };
            ("secret key", public)
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}: {kind}", args.file.display());
    if let Some(name) = &public.name {
        println!("name:       {name}");
    }
    println!("key id:     {}", public.id);
    println!("public key: {}", hex::encode(public.key.as_bytes()));
    Ok(ExitCode::SUCCESS)
}

/// Which trust-policy version to issue under: given, or read from the config.
#[derive(Debug, Args)]
pub struct PolicySource {
    /// The agent config whose `[trust]` table to check the result against (and
    /// take the policy version from).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trust-policy version to issue under (default: the config's version).
    #[arg(long, value_name = "N")]
    pub policy_version: Option<u32>,
}

impl PolicySource {
    /// The policy (when a config was given) and the version to issue under.
    fn load(&self) -> anyhow::Result<(Option<TrustPolicy>, u32)> {
        let policy = self
            .config
            .as_deref()
            .map(TrustPolicy::from_config_file)
            .transpose()?;
        let version = match (self.policy_version, &policy) {
            (Some(v), _) => v,
            (None, Some(p)) => p.version,
            (None, None) => bail!(
                "say which trust-policy version this is issued under: --policy-version N, or \
                 --config agent.toml to take it from the agent's config"
            ),
        };
        Ok((policy, version))
    }
}

/// Delegate part of a key's authority to another key
///
/// Signs a delegation that lets the key in --to issue permits for cgroups under
/// the given prefixes, each permit living at most --max-ttl, until --expires.
/// The signing key is a root key, or a key that already holds a delegation
/// (pass it with --delegation; the new link is appended to that chain). The
/// delegation may only narrow the authority it is given.
///
/// Example: authz-agent delegate --key ops-root.key --to team-a.pub
///   --cgroup-prefix /jobs.slice/team-a --max-ttl 1d --expires 90d
///   --config /etc/authz/agent.toml --out team-a.delegation
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DelegateArgs {
    /// The signing key (NAME.key).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The delegation that gives the signing key its authority, when it is not
    /// a root key.
    #[arg(long, value_name = "FILE")]
    pub delegation: Option<PathBuf>,
    /// The public key receiving the authority (NAME.pub).
    #[arg(long, value_name = "PUB")]
    pub to: PathBuf,
    /// A cgroup (with its descendants) the delegate may issue permits for;
    /// repeatable.
    #[arg(long = "cgroup-prefix", value_name = "CGROUP", required = true)]
    pub cgroup_prefixes: Vec<String>,
    /// Longest lifetime of a permit the delegate may issue (e.g. 12h, 7d).
    #[arg(long, value_name = "DURATION")]
    pub max_ttl: String,
    /// When the delegation ends: an RFC 3339 UTC time or a duration from now.
    #[arg(long, value_name = "TIME|DURATION")]
    pub expires: String,
    /// When the delegation starts (RFC 3339 UTC; default now).
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    #[command(flatten)]
    pub policy: PolicySource,
    /// Where to write the delegation (`-` for standard output). Never overwrites.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Parses `--expires`: an absolute time, or a duration after `start`.
pub(crate) fn parse_until(s: &str, start: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let secs = time::parse_duration(s).map_err(|_| {
        anyhow::anyhow!(
            "{s:?} is neither an RFC 3339 UTC time (2025-01-31T12:00:00Z) nor a duration (90d)"
        )
    })?;
    start
        .checked_add(secs)
        .with_context(|| format!("{s} from now is after year 9999"))
}

/// Parses an optional `--not-before`, defaulting to `now`.
pub(crate) fn parse_start(s: Option<&str>, now: Timestamp) -> anyhow::Result<Timestamp> {
    s.map_or(Ok(now), |s| Ok(s.parse::<Timestamp>()?))
}

/// Writes `contents` to `out` (refusing to overwrite), or to stdout for `-`.
pub(crate) fn write_output(out: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    if out == Path::new("-") {
        std::io::stdout()
            .write_all(contents.as_bytes())
            .context("cannot write to standard output")?;
        return Ok(());
    }
    text::write_new(out, mode, contents)?;
    Ok(())
}

/// Runs `authz-agent delegate`.
pub fn delegate(args: DelegateArgs) -> anyhow::Result<ExitCode> {
    let (policy, policy_version) = args.policy.load()?;
    let key = keys::read_secret_key(&args.key)?;
    let to = PublicKey::read(&args.to)?;
    let parent = args
        .delegation
        .as_deref()
        .map(Delegation::read)
        .transpose()?;
    let issuer = KeyId::of(&key.verifying_key());
    if let Some(p) = &parent {
        let holder = p.last().delegate_key_id();
        if holder != issuer {
            bail!(
                "{} delegates to key {holder}, not to the signing key {issuer}",
                args.delegation
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            );
        }
    }
    let now = Timestamp::now();
    let not_before = parse_start(args.not_before.as_deref(), now)?;
    let cgroup_prefixes = args
        .cgroup_prefixes
        .iter()
        .map(|p| CgroupPath::normalize(p))
        .collect::<Result<Vec<_>, _>>()?;
    let grant = Grant {
        id: ArtifactId::random(),
        issued_at: now,
        policy_version,
        issuer,
        delegate_key: to.key,
        cgroup_prefixes,
        max_ttl_seconds: time::parse_duration(&args.max_ttl)?,
        not_before,
        expires: parse_until(&args.expires, not_before)?,
    };
    // Refuse to write a delegation that could never be honoured.
    if let Some(p) = &parent {
        let of = p.links().len() + 1;
        let part = Part::Delegation {
            index: of,
            of,
            id: grant.id,
        };
        Limits::link(of - 2, of - 1, p.last()).check_narrows(&grant, &part)?;
    }
    let delegation = Delegation::extend(parent.as_ref(), grant, &key)?;
    if let Some(policy) = &policy {
        let at = SystemTime::max(SystemTime::now(), not_before.to_system_time());
        crate::trust::verify_delegation(&delegation, policy, &|_| false, at)
            .context("the new delegation would not be valid under the given config")?;
    }
    write_output(&args.out, 0o644, &delegation.to_toml())?;
    let last = delegation.last().grant();
    eprintln!(
        "delegated to key {} ({} link{}): cgroups {}, permits up to {}, until {}",
        to.id,
        delegation.links().len(),
        if delegation.links().len() == 1 {
            ""
        } else {
            "s"
        },
        crate::vocab::fields::join_prefixes(&last.cgroup_prefixes),
        time::format_duration(last.max_ttl_seconds),
        last.expires
    );
    Ok(ExitCode::SUCCESS)
}
