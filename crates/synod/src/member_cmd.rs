//! `synod member`: the cluster's membership from the command line (`/v1/members`). Any
//! node will do: a follower sends a change on to the leader. Output is for people by
//! default and JSON with `--json`; a refusal says why and changes nothing (exit 2).

use std::process::ExitCode;

use clap::Subcommand;
use synod_client::api::{AddMemberRequest, ConfigurationView, MemberChangeResponse, MembersResponse};
use synod_client::{Client, Error, Options};

use crate::client_cmd::Endpoints;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// The configuration in force, the newest decided, the leader, and each learner's lag.
    List,
    /// Admit a new member as a learner (it catches up but does not vote yet). A node
    /// started with `synod server --join` does this itself.
    Add {
        /// Where peers reach it (host:port).
        #[arg(long)]
        peer: String,
        /// Where clients reach it (host:port).
        #[arg(long)]
        http: String,
        /// Its id (default: the leader picks one above every id it knows).
        #[arg(long)]
        id: Option<u32>,
    },
    /// Make a caught-up learner a voter.
    Promote { id: u32 },
    /// Remove a voter or learner. Removing the leader hands its leadership over first.
    Remove {
        id: u32,
        /// Even if the voters heard lately would be no majority afterwards (the cluster
        /// may stop deciding until the missing voters come back).
        #[arg(long)]
        force: bool,
    },
    /// Hand the leadership over (to --to, or the most caught-up voter).
    TransferLeader {
        #[arg(long)]
        to: Option<u32>,
    },
}

fn configuration(c: &ConfigurationView) -> String {
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    format!("epoch {}: voters {}, learners {}", c.epoch, list(&c.voters), list(&c.learners))
}

fn describe(m: &MembersResponse) -> String {
    let mut lines = vec![format!("cluster {} (answered by node {})", m.cluster, m.node)];
    lines.push(format!("in force: {}", configuration(&m.configuration)));
    if m.latest.epoch != m.configuration.epoch {
        lines.push(format!("decided, taking force: {}", configuration(&m.latest)));
    }
    match (m.leader, &m.leader_http) {
        (Some(l), Some(http)) => lines.push(format!("leader: {l} ({http})")),
        (Some(l), None) => lines.push(format!("leader: {l}")),
        (None, _) => lines.push("leader: none known".into()),
    }
    lines.push(format!("{:<6} {:<8} {:<24} {:<28} lag", "id", "role", "peer", "http"));
    for member in &m.latest.members {
        let role = if m.latest.voters.contains(&member.id) { "voter" } else { "learner" };
        let lag = m
            .learners
            .iter()
            .find(|l| l.id == member.id)
            .map(|l| l.lag_slots.map_or("not heard".into(), |n| format!("{n} slots")))
            .unwrap_or_default();
        lines.push(format!(
            "{:<6} {:<8} {:<24} {:<28} {lag}",
            member.id, role, member.peer_addr, member.http_addr
        ));
    }
    lines.join("\n")
}

fn changed(verb: &str, r: &MemberChangeResponse) -> String {
    let force = if r.in_force { "in force" } else { "decided, taking force" };
    format!("{verb} {} ({force})\n{}", r.id, describe(&r.members))
}

fn print<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("serializable"));
    } else {
        println!("{}", text(value));
    }
}

fn fail(error: Error) -> ExitCode {
    eprintln!("synod member: {error}");
    match &error {
        Error::Rejected { code, .. } => {
            let hint = match code.as_str() {
                "change_in_flight" => Some("the last change is still taking force; try again in a moment"),
                "learner_behind" => Some("the learner is catching up; `synod member list` shows its lag"),
                "would_lose_majority" => Some("bring the missing voters back first, or pass --force"),
                _ => None,
            };
            if let Some(hint) = hint {
                eprintln!("  hint: {hint}");
            }
            ExitCode::from(2)
        }
        Error::SessionConflict { .. } => ExitCode::from(2),
        Error::Unavailable { .. } => ExitCode::from(3),
    }
}

pub async fn member(command: MemberCmd, endpoints: Endpoints) -> ExitCode {
    // A 503 (no leader for a moment, as while the leadership is handed over) is retried
    // with backoff; a refusal (4xx) is not, and a change retried after an unknown outcome
    // is refused as not_applicable if the first attempt took.
    let c = Client::new(endpoints.endpoints.clone(), Options::default());
    let json = endpoints.json;
    let result = match command {
        MemberCmd::List => c.members().await.map(|r| print(json, &r, describe)),
        MemberCmd::Add { peer, http, id } => {
            let request = AddMemberRequest { id, peer_addr: peer, http_addr: http, cluster: None };
            c.add_member(&request).await.map(|r| print(json, &r, |r| changed("added learner", r)))
        }
        MemberCmd::Promote { id } => {
            c.promote_member(id).await.map(|r| print(json, &r, |r| changed("promoted", r)))
        }
        MemberCmd::Remove { id, force } => {
            c.remove_member(id, force).await.map(|r| print(json, &r, |r| changed("removed", r)))
        }
        MemberCmd::TransferLeader { to } => c.transfer_leader(to).await.map(|r| {
            print(json, &r, |r| {
                format!("node {} leads ({})", r.leader, r.leader_http.clone().unwrap_or_default())
            })
        }),
    };
    result.map_or_else(fail, |_| ExitCode::SUCCESS)
}
