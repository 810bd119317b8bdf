//! `synod kv`, `synod bank` and `synod status`: the cluster from the command line.
//! Output is for people by default and JSON with `--json`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use synod_client::api::TransferRequest;
use synod_client::{Client, Error, Options, DEFAULT_ENDPOINTS};

#[derive(Args, Debug)]
pub struct Endpoints {
    /// Comma-separated HTTP endpoints of the cluster (any node will do).
    #[arg(long, env = "SYNOD_ENDPOINTS", value_delimiter = ',', global = true,
          default_values_t = DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub endpoints: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Read a key (linearizable unless --stale).
    Get {
        key: String,
        /// Read this node's replica, which may lag.
        #[arg(long)]
        stale: bool,
    },
    /// Write a key.
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
    /// Compare-and-set: write NEW only if the key holds EXPECTED.
    Cas {
        key: String,
        /// The value the key must hold (omit with --absent).
        #[arg(long, conflicts_with = "absent")]
        expected: Option<String>,
        /// The key must not exist.
        #[arg(long)]
        absent: bool,
        /// The value to set (omit with --delete).
        #[arg(long, conflicts_with = "delete")]
        new: Option<String>,
        /// Delete the key if the comparison holds.
        #[arg(long)]
        delete: bool,
    },
    /// List keys starting with PREFIX.
    Scan {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum BankCmd {
    /// Open an account with an initial balance.
    Open {
        account: u64,
        #[arg(long, default_value_t = 0)]
        balance: u64,
    },
    /// Move money. The id makes the transfer idempotent: a repeat returns the first result.
    Transfer {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long)]
        amount: u64,
        /// Transfer id (default: random). Reuse it to retry safely.
        #[arg(long)]
        id: Option<u64>,
    },
    /// One account's balance.
    Balance { account: u64 },
    /// Every account's balance.
    List,
}

fn client(endpoints: &Endpoints) -> Client {
    Client::new(endpoints.endpoints.clone(), Options::default())
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("serializable"));
    } else {
        println!("{}", text(value));
    }
}

fn fail(error: Error) -> ExitCode {
    eprintln!("synod: {error}");
    match error {
        // Refused, nothing changed: exit 2 for both.
        Error::Rejected { .. } | Error::SessionConflict { .. } => ExitCode::from(2),
        Error::Unavailable { .. } => ExitCode::from(3),
    }
}

fn show(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "(absent)".into())
}

pub async fn kv(command: KvCmd, endpoints: Endpoints) -> ExitCode {
    let c = client(&endpoints);
    let json = endpoints.json;
    let result = match command {
        KvCmd::Get { key, stale } => c.get(&key, stale).await.map(|r| print(json, &r, |r| show(&r.value))),
        KvCmd::Put { key, value } => c.put(&key, &value).await.map(|r| print(json, &r, |_| "ok".into())),
        KvCmd::Delete { key } => c.delete(&key).await.map(|r| {
            print(json, &r, |r| if r.previous.is_some() { "deleted".into() } else { "(absent)".into() })
        }),
        KvCmd::Cas { key, expected, absent, new, delete } => {
            if expected.is_none() && !absent {
                eprintln!("synod: give --expected VALUE or --absent");
                return ExitCode::from(2);
            }
            if new.is_none() && !delete {
                eprintln!("synod: give --new VALUE or --delete");
                return ExitCode::from(2);
            }
            c.cas(&key, expected.as_deref(), new.as_deref()).await.map(|r| {
                print(json, &r, |r| {
                    if r.succeeded {
                        "ok".into()
                    } else {
                        format!("not swapped: current value is {}", show(&r.current))
                    }
                })
            })
        }
        KvCmd::Scan { prefix, limit } => c.scan(&prefix, limit).await.map(|r| {
            print(json, &r, |r| {
                let mut lines: Vec<String> =
                    r.entries.iter().map(|e| format!("{}\t{}", e.key, e.value)).collect();
                if r.more {
                    lines.push(format!("... more (raise --limit above {limit})"));
                }
                lines.join("\n")
            })
        }),
    };
    result.map_or_else(fail, |_| ExitCode::SUCCESS)
}

pub async fn bank(command: BankCmd, endpoints: Endpoints) -> ExitCode {
    let c = client(&endpoints);
    let json = endpoints.json;
    let result = match command {
        BankCmd::Open { account, balance } => c.open_account(account, balance).await.map(|r| {
            print(json, &r, |r| format!("{} account {} (balance {})", r.result, r.account, r.balance))
        }),
        BankCmd::Transfer { from, to, amount, id } => {
            let id = id.unwrap_or_else(rand::random);
            c.transfer(TransferRequest { id, from, to, amount })
                .await
                .map(|r| print(json, &r, |r| format!("transfer {}: {}", r.id, r.result)))
        }
        BankCmd::Balance { account } => {
            c.balance(account).await.map(|r| print(json, &r, |r| r.balance.to_string()))
        }
        BankCmd::List => c.balances().await.map(|r| {
            print(json, &r, |r| {
                r.balances.iter().map(|(a, b)| format!("{a}\t{b}")).collect::<Vec<_>>().join("\n")
            })
        }),
    };
    result.map_or_else(fail, |_| ExitCode::SUCCESS)
}

pub async fn status(endpoints: Endpoints) -> ExitCode {
    let mut failures = 0;
    let mut all = Vec::new();
    for endpoint in &endpoints.endpoints {
        let c = Client::new(vec![endpoint.clone()], Options { attempts_max: 1, ..Options::default() });
        match c.status().await {
            Ok(status) => all.push(serde_json::to_value(&status).expect("serializable")),
            Err(error) => {
                failures += 1;
                all.push(serde_json::json!({ "endpoint": endpoint, "error": error.to_string() }));
            }
        }
    }
    if endpoints.json {
        println!("{}", serde_json::to_string_pretty(&all).expect("serializable"));
    } else {
        println!(
            "{:<6} {:<8} {:<8} {:<10} {:<10} {:<10} {:<6} endpoint",
            "node", "role", "leader", "ballot", "decided", "applied", "epoch"
        );
        for (endpoint, value) in endpoints.endpoints.iter().zip(&all) {
            if let Some(error) = value.get("error") {
                println!("{:<6} {:<8} {endpoint}  ({})", "?", "down", error.as_str().unwrap_or(""));
                continue;
            }
            let me = &value["node"];
            let learns = value["configuration"]["learners"].as_array().is_some_and(|l| l.contains(me));
            let role = if value["is_leader"].as_bool() == Some(true) {
                "leader"
            } else if value["removed"].as_bool() == Some(true) {
                // The group removed it: it takes no part any more.
                "removed"
            } else if learns {
                "learner"
            } else if !value["recovering"].is_null() {
                // Damaged or lost storage: not voting until repaired from its peers.
                "recover"
            } else {
                "follower"
            };
            // The epoch in force, and the newest decided after a slash while it takes force.
            let (epoch, latest) = (&value["configuration"]["epoch"], &value["latest_configuration"]["epoch"]);
            let epoch = if epoch == latest { epoch.to_string() } else { format!("{epoch}/{latest}") };
            println!(
                "{:<6} {:<8} {:<8} {:<10} {:<10} {:<10} {:<6} {endpoint}",
                value["node"].to_string(),
                role,
                value["leader"].as_u64().map_or("none".into(), |l| l.to_string()),
                value["ballot"].as_str().unwrap_or(""),
                value["decided_upto"].to_string(),
                value["applied_upto"].to_string(),
                epoch,
            );
        }
        // The newest configuration in force among the nodes that answered (a removed or
        // lagging node may hold an older one).
        if let Some(c) = all.iter().map(|v| &v["configuration"]).max_by_key(|c| c["epoch"].as_u64()) {
            let list = |ids: &serde_json::Value| {
                ids.as_array()
                    .map_or(String::new(), |a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
            };
            println!(
                "configuration {}: voters {} learners {} (synod member list: addresses and lag)",
                c["epoch"],
                list(&c["voters"]),
                if list(&c["learners"]).is_empty() { "-".into() } else { list(&c["learners"]) },
            );
        }
    }
    if failures == endpoints.endpoints.len() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
