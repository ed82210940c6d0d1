//! `meshca token`: bootstrap tokens for data planes that have no certificate yet (see
//! [`crate::api::token`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::{connect, refused, ConnArgs};
use crate::error::CliError;
use crate::files::write_private;
use crate::flags::parse_tags;
use crate::proto::{CreateTokenRequest, RotateTokenKeyRequest};

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a token for exactly one identity (mesh + tags) and print it.
    ///
    /// Give it to `meshca agent --token-file` on the data plane: the agent presents it for its
    /// first certificate, then renews with that certificate. Whoever holds the token can get a
    /// certificate for the identity until it expires: treat it as a secret.
    Create(CreateArgs),
    /// Replace the token signing key: every token minted before stops working (the admin only).
    /// Certificates already issued stay valid.
    RotateKey(ConnArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The mesh.
    #[arg(long, default_value = "default")]
    mesh: String,
    /// A tag of the identity, KEY=VALUE; repeat it. `kuma.io/service` is required.
    #[arg(long = "tag", value_name = "KEY=VALUE", required = true)]
    tags: Vec<String>,
    /// How long the token is good for (Kuma duration: 24h, 30m); at most 720h.
    #[arg(long, default_value = "24h", value_parser = crate::flags::parse_duration)]
    valid_for: Duration,
    /// Write the token to this file (0600) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) async fn token(a: TokenArgs) -> Result<(), CliError> {
    match a.command {
        TokenCommand::Create(c) => create(c).await,
        TokenCommand::RotateKey(conn) => {
            let mut client = connect(&conn.server, conn.client_tls().as_ref()).await?;
            let r = client
                .rotate_token_key(RotateTokenKeyRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            eprintln!(
                "meshca: token signing key rotated (new key {}); every earlier token is revoked",
                r.key_id
            );
            Ok(())
        }
    }
}

async fn create(a: CreateArgs) -> Result<(), CliError> {
    let tags = parse_tags(&a.tags)?;
    let mut client = connect(&a.conn.server, a.conn.client_tls().as_ref()).await?;
    let r = client
        .create_token(CreateTokenRequest {
            mesh: a.mesh.clone(),
            tags: super::proto_tags(&tags),
            valid_for_seconds: a.valid_for.as_secs().max(1),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let until = super::inspect::fmt_time(r.expires_at);
    match &a.out {
        Some(path) => {
            write_private(path, format!("{}\n", r.token).as_bytes())?;
            eprintln!(
                "meshca: wrote a token for mesh `{}` to {} (valid until {until}, key {})",
                a.mesh,
                path.display(),
                r.key_id
            );
        }
        None => {
            println!("{}", r.token);
            eprintln!(
                "meshca: token for mesh `{}` valid until {until} (key {})",
                a.mesh, r.key_id
            );
        }
    }
    Ok(())
}
