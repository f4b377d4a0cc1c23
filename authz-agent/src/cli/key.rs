//! `authz-agent key generate | show`.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output::Output;
use crate::{
    trust::keys::{self, PublicKey},
    vocab::{keyid::KeyId, text},
};

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
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A .pub or .key file.
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl KeyArgs {
    pub(super) fn json(&self) -> bool {
        match &self.command {
            KeyCommand::Generate(a) => a.json,
            KeyCommand::Show(a) => a.json,
        }
    }
}

/// A key as `--json` shows it.
#[derive(Debug, serde::Serialize)]
struct KeyJson {
    /// `public key` or `secret key` (show), `key pair` (generate).
    kind: &'static str,
    name: Option<String>,
    key_id: String,
    /// The public key (hex): what `[[trust.roots]] public_key` takes.
    public_key: String,
    /// The files written (generate).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_file: Option<PathBuf>,
}

/// Runs `authz-agent key ...`.
pub fn run(args: KeyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeyCommand::Generate(a) => generate(&a),
        KeyCommand::Show(a) => show(&a),
    }
}

fn generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let key = keys::generate();
    let paths = keys::write_key_pair(&args.out, &key).context("cannot create the key pair")?;
    let public = PublicKey::read(&paths.public)?;
    if args.json {
        let result = KeyJson {
            kind: "key pair",
            name: public.name.clone(),
            key_id: public.id.to_string(),
            public_key: hex::encode(public.key.as_bytes()),
            secret_file: Some(paths.secret.clone()),
            public_file: Some(paths.public.clone()),
        };
        Output::Json.print(&result, |_| String::new())?;
        return Ok(ExitCode::SUCCESS);
    }
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

fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
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
    if args.json {
        let result = KeyJson {
            kind,
            name: public.name.clone(),
            key_id: public.id.to_string(),
            public_key: hex::encode(public.key.as_bytes()),
            secret_file: None,
            public_file: None,
        };
        Output::Json.print(&result, |_| String::new())?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: {kind}", args.file.display());
    if let Some(name) = &public.name {
        println!("name:       {name}");
    }
    println!("key id:     {}", public.id);
    println!("public key: {}", hex::encode(public.key.as_bytes()));
    Ok(ExitCode::SUCCESS)
}
