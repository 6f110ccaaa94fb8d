//! An example workload: fetch a Twilio credential from credbroker over its
//! socket and start a Twilio Verify verification with it.
//!
//! ```sh
//! cargo run --example verify_client -- --socket /run/credbroker/broker.sock \
//!     --credential per-workload --service VAxxxxxxxx --to +15005550006 [--channel sms] \
//!     [--verify-base https://verify.twilio.com]
//! ```
//!
//! With a `dynamic_api_key` credential the workload never sees a long-lived
//! secret: it gets a restricted key that only may create verifications and
//! that Twilio forgets minutes later.

use std::process::ExitCode;

use credbroker::{client::Client, proto::credential::Secret};

struct Args {
    socket: String,
    credential: String,
    service: String,
    to: String,
    channel: String,
    verify_base: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: std::env::var("CREDBROKER_SOCKET")
            .unwrap_or_else(|_| "/run/credbroker/broker.sock".into()),
        credential: String::new(),
        service: String::new(),
        to: String::new(),
        channel: "sms".into(),
        verify_base: "https://verify.twilio.com".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => args.socket = value,
            "--credential" => args.credential = value,
            "--service" => args.service = value,
            "--to" => args.to = value,
            "--channel" => args.channel = value,
            "--verify-base" => args.verify_base = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    for (name, v) in [
        ("--credential", &args.credential),
        ("--service", &args.service),
        ("--to", &args.to),
    ] {
        if v.is_empty() {
            return Err(format!("{name} is required"));
        }
    }
    Ok(args)
}

async fn run(args: Args) -> Result<(), String> {
    let client = Client::connect(&args.socket)
        .await
        .map_err(|e| e.to_string())?;
    let credential = client
        .get(&args.credential)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/v2/Services/{}/Verifications",
        args.verify_base.trim_end_matches('/'),
        args.service
    );
    let request = reqwest::Client::new().post(&url);
    // Basic auth with an API key's SID and secret or the Account SID and
    // Auth Token; an OAuth app's bearer token as it is.
    let request = match &credential.secret {
        Some(Secret::ApiKey(k)) => request.basic_auth(&k.sid, Some(&k.secret)),
        Some(Secret::AuthToken(t)) => request.basic_auth(&credential.account_sid, Some(&t.token)),
        Some(Secret::Bearer(b)) => request.bearer_auth(&b.access_token),
        None => return Err("the credential has no secret".into()),
    };
    let response = request
        .form(&[("To", args.to.as_str()), ("Channel", args.channel.as_str())])
        .send()
        .await
        .map_err(|e| format!("cannot reach Twilio Verify: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "Twilio Verify answered HTTP {status}: {}",
            body["message"].as_str().unwrap_or("")
        ));
    }
    println!(
        "verification {} to {} by {}: {}",
        body["sid"].as_str().unwrap_or("?"),
        body["to"].as_str().unwrap_or("?"),
        body["channel"].as_str().unwrap_or("?"),
        body["status"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("verify_client: {e}");
            return ExitCode::from(64);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verify_client: {e}");
            ExitCode::FAILURE
        }
    }
}
